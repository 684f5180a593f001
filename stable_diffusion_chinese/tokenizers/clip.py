"""CLIP byte-level BPE tokenizer (Stable Diffusion 1.x/2.x), equal to transformers 5.23's CLIPTokenizer.

transformers 5 builds it on Hugging Face ``tokenizers`` (models/clip/tokenization_clip.py): normalize
with NFC, every whitespace run -> one space, lower-case; split with CLIP's pattern
``<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` keeping only
the matches; the ByteLevel step re-splits each piece with GPT-2's pattern (which only ever cuts the two
special-token spellings) and spells its UTF-8 bytes as characters; BPE with ``</w>`` after the last
symbol of each piece. Framed as ``<|startoftext|> ... <|endoftext|>``; padded with the pad token
(``<|endoftext|>`` in SD 1.x, ``!`` = id 0 in SD 2.x). No ftfy: transformers 5 never applies it.

SD 1.x's own tokenizer (openai/clip-vit-large-patch14) needs no folder: ``sd1_clip_tokenizer()`` derives it
from OpenAI's BPE merges shipped as ``assets/clip_bpe_simple_vocab_16e6.txt.gz`` (see assets/README.md), and
``write_sd1_clip_tokenizer(folder)`` writes it as a standard ``tokenizer/`` folder.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import unicode_tables
from .base import Tokenizer
from .casing import lowercase
from .bpe import BYTE_TO_CHAR, BytePairEncoder, bytes_as_chars, read_merges
from .folder import SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, TokenizerFolder, TokenSettings, TokenSpec

DEFAULT_TOKENS = {"unk_token": "<|endoftext|>", "bos_token": "<|startoftext|>",
                  "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
DEFAULT_MAX_LENGTH = 77
END_OF_WORD = "</w>"

_LETTER = unicode_tables.CLIP_LETTER.regex_class()
_NUMBER = unicode_tables.CLIP_NUMBER.regex_class()
_SPACE = unicode_tables.WHITE_SPACE.regex_class()
_CONTRACTIONS = "'s|'t|'re|'ve|'m|'ll|'d"
# Python's `re` tries alternatives in order like Oniguruma, so the patterns carry over unchanged
_CLIP_SPLIT = re.compile(rf"<\|startoftext\|>|<\|endoftext\|>|{_CONTRACTIONS}|[{_LETTER}]+|[{_NUMBER}]"
                         rf"|[^{_SPACE}{_LETTER}{_NUMBER}]+")
# GPT-2's pattern as the ByteLevel step applies it; pieces hold no whitespace, so its space branches drop
_BYTE_LEVEL_SPLIT = re.compile(rf"{_CONTRACTIONS}|[{_LETTER}]+|[{_NUMBER}]+|[^{_SPACE}{_LETTER}{_NUMBER}]+")
_WHITE_SPACE_RUN = re.compile(f"[{_SPACE}]+")


class CLIPTokenizer(Tokenizer):
    """Byte-level BPE over ``vocab.json`` + ``merges.txt``; see the module docstring."""

    def __init__(self, vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], *,
                 model_max_length: int = DEFAULT_MAX_LENGTH, tokens: TokenSettings | None = None):
        self.vocab = dict(vocab)
        self.tokens = tokens or TokenSettings.from_names(DEFAULT_TOKENS)
        ids = {name: self._token_id(name) for name in ("unk_token", "bos_token", "eos_token", "pad_token")}
        self._bpe = BytePairEncoder(self.vocab, merges, unk_id=ids["unk_token"], end_of_word_suffix=END_OF_WORD)
        super().__init__(vocab_size=len(self.vocab), model_max_length=model_max_length,
                         pad_token_id=ids["pad_token"], prefix_ids=[ids["bos_token"]],
                         suffix_ids=[ids["eos_token"]], added_tokens=self.tokens.resolve(self.vocab.get))

    @classmethod
    def from_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, **kwargs) -> "CLIPTokenizer":
        with open(vocab_json, encoding="utf-8") as f:
            vocab = json.load(f)
        with open(merges_txt, encoding="utf-8") as f:
            merges = read_merges(f)
        return cls(vocab, merges, **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "CLIPTokenizer":
        """A ``tokenizer/`` folder: ``vocab.json`` + ``merges.txt`` (else a BPE ``tokenizer.json``) and configs."""
        files = TokenizerFolder(folder)
        kwargs = dict(model_max_length=files.model_max_length(DEFAULT_MAX_LENGTH),
                      tokens=files.token_settings(DEFAULT_TOKENS))
        if files.file("vocab.json") and files.file("merges.txt"):
            return cls.from_files(*files.require("vocab.json", "merges.txt"), **kwargs)
        vocab, merges = _bpe_from_tokenizer_json(files)
        return cls(vocab, merges, **kwargs)

    def _token_id(self, name: str) -> int:
        content = self.tokens.named.get(name)
        if content not in self.vocab:
            raise ValueError(f"{name}={content!r} is not in the vocabulary")
        return self.vocab[content]

    def _normalize(self, text: str) -> str:
        text = _WHITE_SPACE_RUN.sub(" ", unicodedata.normalize("NFC", text))
        return lowercase(text)

    def _normalized_to_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _CLIP_SPLIT.findall(text):
            for word in _BYTE_LEVEL_SPLIT.findall(piece):
                ids.extend(self._bpe.encode_word(bytes_as_chars(word)))
        return ids


def _bpe_from_tokenizer_json(files: TokenizerFolder) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = (files.tokenizer_json() or {}).get("model", {})
    if model.get("type") != "BPE":
        raise FileNotFoundError(f"{files.path} has neither vocab.json + merges.txt nor a BPE tokenizer.json")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    if any(len(m) != 2 for m in merges):
        raise ValueError(f"{files.path}/tokenizer.json has a merge that is not a pair of tokens")
    return dict(model["vocab"]), merges  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------------
# SD 1.x's CLIP tokenizer from OpenAI's BPE merges file
# ------------------------------------------------------------------------------------------------------
SD1_BPE_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "clip_bpe_simple_vocab_16e6.txt.gz")
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"
# openai/CLIP clip/simple_tokenizer.py: line 0 of the file is a header, and only the first 49152 - 256 - 2
# merges are used, so that 256 bytes + 256 bytes with </w> + merges + 2 specials = 49408 tokens
SD1_MERGE_COUNT = 49152 - 256 - 2
SD1_VOCAB_SIZE = 49408
MERGES_HEADER = "#version: 0.2"   # the first line of Hugging Face merges.txt files

# SD 1.x's tokenizer/tokenizer_config.json and special_tokens_map.json (runwayml/stable-diffusion-v1-5, as
# saved from openai/clip-vit-large-patch14): bos/eos/unk are normalized AddedTokens, the pad token is eos
_NORMALIZED = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
SD1_SPECIAL_TOKENS_MAP: dict[str, Any] = {
    "bos_token": {"content": START_OF_TEXT, **_NORMALIZED}, "eos_token": {"content": END_OF_TEXT, **_NORMALIZED},
    "pad_token": END_OF_TEXT, "unk_token": {"content": END_OF_TEXT, **_NORMALIZED}}
SD1_TOKENIZER_CONFIG: dict[str, Any] = {
    "add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": DEFAULT_MAX_LENGTH,
    "tokenizer_class": "CLIPTokenizer",
    **{name: {"__type": "AddedToken", **value} if isinstance(value, dict) else value
       for name, value in SD1_SPECIAL_TOKENS_MAP.items()}}
# what TokenizerFolder.token_settings reads from the two configs above (bos, eos, unk, pad in that order;
# unk and pad repeat eos); tests check that this and the written folder tokenize alike
SD1_TOKENS = TokenSettings(
    named={"bos_token": START_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT, "pad_token": END_OF_TEXT},
    added=[TokenSpec(START_OF_TEXT, normalized=True), TokenSpec(END_OF_TEXT, normalized=True)])


def read_clip_bpe_file(path: str | os.PathLike = SD1_BPE_PATH) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz``, laid out as its SimpleTokenizer
    does: the 256 byte characters, the same with ``</w>``, each merge joined, then the two specials."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise ValueError(f"{path} is not a gzip-compressed CLIP BPE merges file ({error})") from None
    merges = read_merges(lines[1:SD1_MERGE_COUNT + 1])
    if len(merges) != SD1_MERGE_COUNT:
        raise ValueError(f"{path} holds {len(merges)} merges after its header; SD 1.x's tokenizer uses the "
                         f"first {SD1_MERGE_COUNT}")
    # GPT-2's byte order (printable bytes first, then the rest) is ascending code point order of their characters
    alphabet = sorted(BYTE_TO_CHAR)
    tokens = [*alphabet, *(c + END_OF_WORD for c in alphabet), *(a + b for a, b in merges),
              START_OF_TEXT, END_OF_TEXT]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the derived vocabulary repeats {len(tokens) - len(vocab)} tokens")
    return vocab, merges


def sd1_clip_tokenizer(bpe_file: str | os.PathLike = SD1_BPE_PATH) -> CLIPTokenizer:
    """SD 1.x's tokenizer (openai/clip-vit-large-patch14): 49408 tokens, 77 positions, padded with eos."""
    vocab, merges = read_clip_bpe_file(bpe_file)
    return CLIPTokenizer(vocab, merges, model_max_length=DEFAULT_MAX_LENGTH, tokens=SD1_TOKENS)


def write_sd1_clip_tokenizer(folder: str | os.PathLike, bpe_file: str | os.PathLike = SD1_BPE_PATH) -> Path:
    """Write SD 1.x's tokenizer as a standard folder (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) that this package and transformers' ``CLIPTokenizer.from_pretrained`` read."""
    vocab, merges = read_clip_bpe_file(bpe_file)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)   # one line, as Hugging Face saves it
    with open(out / "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write(MERGES_HEADER + "\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    _write_json(out / TOKENIZER_CONFIG, SD1_TOKENIZER_CONFIG)
    _write_json(out / SPECIAL_TOKENS_MAP, SD1_SPECIAL_TOKENS_MAP)
    return out


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")
