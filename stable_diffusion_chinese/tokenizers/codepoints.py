"""Sets of Unicode code points kept as sorted inclusive ranges.

The reference tokenizers (Hugging Face ``tokenizers``, written in Rust) classify characters with
Unicode tables of their own, older or newer than the ``unicodedata`` of the running Python. To give
the same ids we use their tables (see ``unicode_tables.py``), stored as ranges and queried here.
"""
from __future__ import annotations

import bisect
from typing import Iterable


class CodepointSet:
    """An immutable set of code points, e.g. ``"0041-005A 00AA 00B5"`` (hex, inclusive ranges)."""

    def __init__(self, ranges: Iterable[tuple[int, int]]):
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if first > last:
                raise ValueError(f"empty code point range {first:X}-{last:X}")
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
            else:
                merged.append((first, last))
        self.ranges: tuple[tuple[int, int], ...] = tuple(merged)
        self._firsts = [first for first, _ in merged]

    @classmethod
    def parse(cls, text: str) -> "CodepointSet":
        """Read whitespace-separated ``XXXX`` or ``XXXX-YYYY`` hex items."""
        ranges = []
        for item in text.split():
            first, _, last = item.partition("-")
            ranges.append((int(first, 16), int(last or first, 16)))
        return cls(ranges)

    def format(self) -> str:
        """The inverse of ``parse`` (used to regenerate the tables)."""
        return " ".join(f"{a:04X}" if a == b else f"{a:04X}-{b:04X}" for a, b in self.ranges)

    def __contains__(self, char: str) -> bool:
        code = ord(char)
        index = bisect.bisect_right(self._firsts, code) - 1
        return index >= 0 and code <= self.ranges[index][1]

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodepointSet) and self.ranges == other.ranges

    def __or__(self, other: "CodepointSet") -> "CodepointSet":
        return CodepointSet(self.ranges + other.ranges)

    def regex_class(self) -> str:
        """The body of a ``re`` character class (``[...]`` without brackets) matching this set."""
        return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in self.ranges)


def _escape(code: int) -> str:
    return f"\\U{code:08x}"


def parse_char_map(text: str) -> dict[str, str]:
    """Read whitespace-separated ``XXXX:YYYY`` hex items into a char -> char dict."""
    pairs = (item.split(":") for item in text.split())
    return {chr(int(key, 16)): chr(int(value, 16)) for key, value in pairs}


def format_char_map(mapping: dict[str, str]) -> str:
    """The inverse of ``parse_char_map`` (used to regenerate the tables)."""
    return " ".join(f"{ord(k):04X}:{ord(v):04X}" for k, v in sorted(mapping.items()))
