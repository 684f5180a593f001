"""Byte-level byte-pair encoding: the byte -> printable character table and the merge loop.

Shared by CLIP's tokenizer (GPT-2's scheme with an end-of-word suffix). The table is GPT-2's
``bytes_to_unicode`` (openai/gpt-2 src/encoder.py, also CLIP's simple_tokenizer.py): printable Latin-1
bytes stand for themselves, the other 68 bytes take the characters U+0100, U+0101, ... in byte order,
so every byte sequence becomes a string without spaces or control characters.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence


def _byte_to_char_table() -> tuple[str, ...]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


BYTE_TO_CHAR: tuple[str, ...] = _byte_to_char_table()


def bytes_as_chars(text: str) -> str:
    """UTF-8 bytes of ``text`` spelled with ``BYTE_TO_CHAR``."""
    return "".join(BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


def read_merges(lines: Iterable[str]) -> list[tuple[str, str]]:
    """``merges.txt`` lines (``"a b"``; a ``#version`` header is skipped) -> pairs in rank order."""
    merges = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.startswith("#version") or not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"merges line {number} is not two tokens separated by one space: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class BytePairEncoder:
    """Applies merges by rank (lowest first) to one word and looks the pieces up in the vocabulary.

    tokenizers pops (rank, position) from a priority queue instead; as a merge's parts always rank
    before it in a trained merges list, both orders give the same pieces.
    """

    cache_size = 10_000   # words; like tokenizers' BPE cache, so a long-running server stays bounded

    def __init__(self, vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], unk_id: int,
                 end_of_word_suffix: str = ""):
        self.vocab = dict(vocab)
        self.ranks = {(a, b): rank for rank, (a, b) in enumerate(merges)}
        self.unk_id = unk_id
        self.suffix = end_of_word_suffix
        self._cache: dict[str, list[int]] = {}

    def encode_word(self, word: str) -> list[int]:
        """Ids of one pre-token (already spelled with ``BYTE_TO_CHAR``)."""
        if not word:
            return []
        if word not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            pieces = self._merge([*word[:-1], word[-1] + self.suffix])
            # a piece missing from the vocabulary (only possible for a single byte) becomes unk, unfused
            self._cache[word] = [self.vocab.get(p, self.unk_id) for p in pieces]
        return self._cache[word]

    def _merge(self, symbols: list[str]) -> list[str]:
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):   # merge every occurrence, left to right, without overlap
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols
