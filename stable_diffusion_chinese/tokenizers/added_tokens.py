"""Special and added tokens found inside the prompt text itself.

The reference (Hugging Face ``tokenizers``' AddedVocabulary) matches them before the model sees the
text: tokens with ``normalized=False`` in the raw text, the others in the normalized text (their content
normalized the same way). A match becomes its id; the text between matches is tokenized as usual. So
``"a <|endoftext|> b"`` yields the eos id in the middle, and ``"[cls]"`` (lower case) is not ``[CLS]``.

A config's ``lstrip``/``rstrip`` flags are not read: they only decide whether whitespace next to the
token is cut, and all three of our pipelines drop whitespace anyway. ``single_word`` is not supported.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Union

#: a piece of text still to tokenize, or the id of a matched added token
Piece = Union[str, int]


@dataclasses.dataclass(frozen=True)
class AddedToken:
    content: str
    id: int
    normalized: bool = False
    special: bool = True


class AddedTokenSplitter:
    """Cuts text into plain pieces and added-token ids, leftmost-longest like the reference."""

    def __init__(self, tokens: Iterable[AddedToken], normalize: Callable[[str], str]):
        self._normalize = normalize
        raw: dict[str, int] = {}
        normalized: dict[str, int] = {}
        for token in tokens:
            if token.normalized:
                normalized.setdefault(normalize(token.content), token.id)
            else:
                raw.setdefault(token.content, token.id)
        normalized.pop("", None)
        self._raw = raw
        self._normalized = normalized
        self._raw_pattern = _alternation(raw)
        self._normalized_pattern = _alternation(normalized)

    def split(self, text: str) -> list[Piece]:
        """Pieces in order; plain pieces come back already normalized."""
        pieces: list[Piece] = []
        for part in _split(text, self._raw_pattern, self._raw):
            if isinstance(part, int):
                pieces.append(part)
            else:
                pieces.extend(_split(self._normalize(part), self._normalized_pattern, self._normalized))
        return [p for p in pieces if p != ""]


def _alternation(contents: dict[str, int]) -> re.Pattern | None:
    if not contents:
        return None
    # longest first: at one position Python's regex takes the first alternative that matches
    ordered = sorted(contents, key=len, reverse=True)
    return re.compile("|".join(re.escape(c) for c in ordered))


def _split(text: str, pattern: re.Pattern | None, ids: dict[str, int]) -> list[Piece]:
    if pattern is None:
        return [text]
    pieces: list[Piece] = []
    start = 0
    for match in pattern.finditer(text):
        pieces.append(text[start:match.start()])
        pieces.append(ids[match.group()])
        start = match.end()
    pieces.append(text[start:])
    return pieces
