"""BERT WordPiece tokenizer (Taiyi-Stable-Diffusion's tokenizer), equal to transformers 5.23's BertTokenizer.

Steps as in Hugging Face ``tokenizers`` (normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece):
clean text (drop control characters, any whitespace -> space), put spaces around CJK ideographs, strip
accents (NFD, drop non-spacing marks; on by default when lower-casing), lower-case; split on whitespace
and isolate punctuation; then greedy longest-match-first WordPiece with ``##`` continuations, a word of
more than 100 characters or with an unmatchable rest becoming ``[UNK]``. Framed as ``[CLS] ... [SEP]``.

The 21128-token Chinese vocabulary ships as ``assets/bert_chinese_vocab.txt``: ``cn_clip/clip/vocab.txt``
from the PyPI wheel cn-clip 1.6.0 (the vocab of bert-base-chinese, which Taiyi uses), sha256
45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c.
"""
from __future__ import annotations

import os
import re
import unicodedata
from typing import Mapping

from . import unicode_tables
from .base import Tokenizer
from .casing import lowercase
from .folder import TokenizerFolder, TokenSettings

DEFAULT_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                  "cls_token": "[CLS]", "mask_token": "[MASK]"}
CHINESE_VOCAB_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "bert_chinese_vocab.txt")
#: BERT's position embeddings; used when a folder's config gives no model_max_length
DEFAULT_MAX_LENGTH = 512
MAX_WORD_CHARS = 100
CONTINUATION = "##"

# CJK ideograph blocks exactly as tokenizers' normalizers/bert.rs `is_chinese_char` lists them (its
# Extension E block starts at U+2B920, not at U+2B820 like Google's original Python)
_CHINESE_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                   (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_CHINESE = re.compile("([" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _CHINESE_RANGES) + "])")
_CONTROL = re.compile("[" + unicode_tables.BERT_CONTROL.regex_class() + "]")
_WHITE_SPACE = re.compile("[" + unicode_tables.WHITE_SPACE.regex_class() + "]")
_NONSPACING_MARK = re.compile("[" + unicode_tables.BERT_NONSPACING_MARK.regex_class() + "]")
_PUNCTUATION = re.compile("([" + unicode_tables.BERT_PUNCTUATION.regex_class() + "])")


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt``: one token per line, id = line number (a repeated token keeps its last line)."""
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n"): index for index, line in enumerate(f)}


class BertTokenizer(Tokenizer):
    """WordPiece over a ``vocab.txt``; see the module docstring."""

    def __init__(self, vocab: Mapping[str, int] | str | os.PathLike = CHINESE_VOCAB_PATH, *,
                 do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, model_max_length: int = DEFAULT_MAX_LENGTH,
                 tokens: TokenSettings | None = None):
        self.vocab = dict(vocab) if isinstance(vocab, Mapping) else load_vocab(vocab)
        self.do_lower_case = bool(do_lower_case)
        # transformers passes None through to tokenizers, which then strips accents iff lower-casing
        self.strip_accents = self.do_lower_case if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.tokens = tokens or TokenSettings.from_names(DEFAULT_TOKENS)
        for name in ("unk_token", "cls_token", "sep_token", "pad_token"):
            if self.tokens.named.get(name) not in self.vocab:
                raise ValueError(f"{name}={self.tokens.named.get(name)!r} is not in the vocabulary")
        self.unk_token_id = self.vocab[self.tokens.named["unk_token"]]
        super().__init__(
            vocab_size=len(self.vocab), model_max_length=model_max_length,
            pad_token_id=self.vocab[self.tokens.named["pad_token"]],
            prefix_ids=[self.vocab[self.tokens.named["cls_token"]]],
            suffix_ids=[self.vocab[self.tokens.named["sep_token"]]],
            added_tokens=self.tokens.resolve(self.vocab.get))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "BertTokenizer":
        """A ``tokenizer/`` folder with ``vocab.txt`` (or a WordPiece ``tokenizer.json``) and its config."""
        files = TokenizerFolder(folder)
        vocab_path = files.file("vocab.txt")
        if vocab_path is not None:
            vocab: Mapping[str, int] | str = vocab_path
        else:
            vocab = _wordpiece_vocab_from_tokenizer_json(files)
        config = files.config
        return cls(vocab, do_lower_case=config.get("do_lower_case", True),
                   strip_accents=config.get("strip_accents"),
                   tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                   model_max_length=files.model_max_length(DEFAULT_MAX_LENGTH),
                   tokens=files.token_settings(DEFAULT_TOKENS))

    # --- normalizer -------------------------------------------------------------------------------
    def _normalize(self, text: str) -> str:
        text = _WHITE_SPACE.sub(" ", _CONTROL.sub("", text))
        if self.tokenize_chinese_chars:
            text = _CHINESE.sub(r" \1 ", text)
        if self.strip_accents:
            text = _NONSPACING_MARK.sub("", unicodedata.normalize("NFD", text))
        if self.do_lower_case:
            text = lowercase(text)
        return text

    # --- pre-tokenizer + WordPiece ----------------------------------------------------------------
    def _normalized_to_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in _WHITE_SPACE.split(text):
            for word in _PUNCTUATION.split(chunk):
                if word:
                    ids.extend(self._wordpiece(word))
        return ids

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_token_id]
        ids = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_token_id]
        return ids


def _wordpiece_vocab_from_tokenizer_json(files: TokenizerFolder) -> dict[str, int]:
    data = files.tokenizer_json()
    model = (data or {}).get("model", {})
    if model.get("type") != "WordPiece":
        raise FileNotFoundError(f"{files.path} has neither vocab.txt nor a WordPiece tokenizer.json")
    return dict(model["vocab"])
