"""Lower-casing as tokenizers does it: character by character with Rust's (newer) Unicode case tables.

Python's ``str.lower`` on a whole string applies the final-sigma rule (``"ΟΔΟΣ"`` -> ``"οδος"``); Rust's
per-character ``to_lowercase`` does not (-> ``"οδοσ"``), so we lower each character alone, and take the
few mappings Python's ``unicodedata`` is too old to know from ``unicode_tables.LOWERCASE_OVERRIDES``.
"""
from __future__ import annotations

from .unicode_tables import LOWERCASE_OVERRIDES


def lowercase(text: str) -> str:
    return "".join(LOWERCASE_OVERRIDES.get(char) or char.lower() for char in text)
