"""CLIP byte-level BPE tokenizer (Stable Diffusion 1.x/2.x), equal to transformers 5.23's CLIPTokenizer.

transformers 5 builds it on Hugging Face ``tokenizers`` (models/clip/tokenization_clip.py): normalize
with NFC, every whitespace run -> one space, lower-case; split with CLIP's pattern
``<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` keeping only
the matches; the ByteLevel step re-splits each piece with GPT-2's pattern (which only ever cuts the two
special-token spellings) and spells its UTF-8 bytes as characters; BPE with ``</w>`` after the last
symbol of each piece. Framed as ``<|startoftext|> ... <|endoftext|>``; padded with the pad token
(``<|endoftext|>`` in SD 1.x, ``!`` = id 0 in SD 2.x). No ftfy: transformers 5 never applies it.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Mapping, Sequence

from . import unicode_tables
from .base import Tokenizer
from .casing import lowercase
from .bpe import BytePairEncoder, bytes_as_chars, read_merges
from .folder import TokenizerFolder, TokenSettings

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
