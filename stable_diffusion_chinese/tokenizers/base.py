"""What every tokenizer shares: added-token matching, special-token framing, truncation, padding.

A subclass only says how to normalize text and how to turn normalized text into ids
(``_normalize`` and ``_normalized_to_ids``); everything a pipeline calls lives here::

    batch = tokenizer(["一只猫", "a cat"], max_length=77)   # padding="max_length", truncation=True
    batch["input_ids"], batch["attention_mask"]             # numpy int64 [2, 77]

Semantics follow transformers' ``tokenizer(texts, padding=..., max_length=..., truncation=...)``: the
text ids are cut to ``max_length`` minus the special tokens, then framed (e.g. ``[CLS] ... [SEP]``,
so truncation keeps the end token), then padded on the right with ``pad_token_id`` (mask 0).
"""
from __future__ import annotations

import abc
from typing import Iterable, Sequence, Union

import numpy as np

from .added_tokens import AddedToken, AddedTokenSplitter

Padding = Union[bool, str]
_PADDING_CHOICES = ("max_length", "longest", "do_not_pad", True, False)


class Tokenizer(abc.ABC):
    """Base class; see the module docstring."""

    def __init__(self, *, vocab_size: int, model_max_length: int, pad_token_id: int,
                 prefix_ids: Sequence[int], suffix_ids: Sequence[int],
                 added_tokens: Iterable[AddedToken]):
        if model_max_length < len(prefix_ids) + len(suffix_ids) + 1:
            raise ValueError(f"model_max_length={model_max_length} leaves no room for text "
                             f"between {len(prefix_ids) + len(suffix_ids)} special tokens")
        self.vocab_size = vocab_size
        self.model_max_length = int(model_max_length)
        self.pad_token_id = int(pad_token_id)
        self.prefix_ids = tuple(int(i) for i in prefix_ids)
        self.suffix_ids = tuple(int(i) for i in suffix_ids)
        self.added_tokens = tuple(added_tokens)
        self._splitter = AddedTokenSplitter(self.added_tokens, self._normalize)

    # --- what a subclass provides ---------------------------------------------------------------
    @abc.abstractmethod
    def _normalize(self, text: str) -> str:
        """The reference's normalizer (lower-casing, NFC, ...) on text without added tokens."""

    @abc.abstractmethod
    def _normalized_to_ids(self, text: str) -> list[int]:
        """Pre-tokenize normalized text and run the vocabulary model (WordPiece, BPE, ...)."""

    # --- public API -------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of one text, framed by the special tokens unless told not to; never truncated or padded."""
        ids = self.text_to_ids(text)
        return self._frame(ids) if add_special_tokens else ids

    def text_to_ids(self, text: str) -> list[int]:
        """Ids of the text alone (no start/end tokens); added tokens written in the text are kept."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in self._splitter.split(text):
            ids.extend([piece] if isinstance(piece, int) else self._normalized_to_ids(piece))
        return ids

    def __call__(self, texts: str | Sequence[str], max_length: int | None = None,
                 padding: Padding = "max_length", truncation: bool = True) -> dict[str, np.ndarray]:
        """Batch-encode to ``{"input_ids", "attention_mask"}``, numpy int64 of shape [B, L]."""
        batch = _as_batch(texts)
        if padding not in _PADDING_CHOICES:
            raise ValueError(f"padding must be one of {_PADDING_CHOICES}, got {padding!r}")
        length = self.model_max_length if max_length is None else int(max_length)
        if truncation and length < len(self.prefix_ids) + len(self.suffix_ids):
            raise ValueError(f"max_length={length} is shorter than the "
                             f"{len(self.prefix_ids) + len(self.suffix_ids)} special tokens")
        rows = [self._row(text, length if truncation else None) for text in batch]
        width = self._padded_width(rows, length, padding)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = row
            attention_mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # --- helpers ----------------------------------------------------------------------------------
    def _frame(self, ids: list[int]) -> list[int]:
        return [*self.prefix_ids, *ids, *self.suffix_ids]

    def _row(self, text: str, max_length: int | None) -> list[int]:
        ids = self.text_to_ids(text)
        if max_length is not None:
            ids = ids[:max_length - len(self.prefix_ids) - len(self.suffix_ids)]
        return self._frame(ids)

    @staticmethod
    def _padded_width(rows: list[list[int]], max_length: int, padding: Padding) -> int:
        lengths = {len(row) for row in rows}
        if padding == "max_length":
            lengths = {max(n, max_length) for n in lengths}   # an untruncated longer row stays longer
        elif padding in ("longest", True):
            lengths = {max(lengths)}
        if len(lengths) > 1:
            raise ValueError(f"the encoded texts have different lengths {sorted(lengths)} and cannot form "
                             "one array; use truncation=True or padding='longest'")
        return lengths.pop()


def _as_batch(texts: str | Sequence[str]) -> list[str]:
    batch = [texts] if isinstance(texts, str) else list(texts)
    if not batch:
        raise ValueError("texts is empty: give a string or a non-empty list of strings")
    for text in batch:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r}")
    return batch
