"""A SentencePiece model's precompiled character map, applied the way tokenizers' ``Precompiled`` does.

The map (NFKC plus SentencePiece's extras, e.g. control characters -> space) is a darts-clone
double-array trie from UTF-8 byte strings to offsets of NUL-terminated replacements, stored in the
model file at ``ModelProto.normalizer_spec.precompiled_charsmap`` (sentencepiece_model.proto fields 3
and 2). tokenizers (normalizers/precompiled.rs, with the spm_precompiled crate) walks the text by
extended grapheme cluster: a cluster shorter than 6 UTF-8 bytes that starts with a key is replaced by
the replacement of its SHORTEST matching prefix (the rest of the cluster is dropped: ``"Ａ\\u0301"`` ->
``"A"``); otherwise each character is looked up alone. That differs from sentencepiece's own longest
match, so we reimplement it. Grapheme clusters come from the ``regex`` package (``\\X``).
"""
from __future__ import annotations

import os
import struct
from typing import Iterator

import regex

_GRAPHEME = regex.compile(r"\X")
_WHOLE_CLUSTER_LIMIT = 6   # bytes; see the module docstring
_MODEL_NORMALIZER_SPEC = 3
_NORMALIZER_CHARSMAP = 2


class PrecompiledCharsmap:
    """Normalizes text with one model's character map."""

    def __init__(self, charsmap: bytes):
        if len(charsmap) < 4:
            raise ValueError("precompiled_charsmap is too short to hold its trie size")
        (trie_bytes,) = struct.unpack_from("<I", charsmap, 0)
        if trie_bytes % 4 or 4 + trie_bytes > len(charsmap) or trie_bytes == 0:
            raise ValueError(f"precompiled_charsmap declares a {trie_bytes}-byte trie in {len(charsmap)} bytes")
        self._units = struct.unpack_from(f"<{trie_bytes // 4}I", charsmap, 4)
        self._replacements = charsmap[4 + trie_bytes:]

    @classmethod
    def from_model_file(cls, path: str | os.PathLike) -> "PrecompiledCharsmap | None":
        """The map inside a ``.model`` file, or None when the model has none (no normalization)."""
        with open(path, "rb") as f:
            model = f.read()
        charsmap = b""
        for number, value in _protobuf_fields(model):
            if number == _MODEL_NORMALIZER_SPEC and isinstance(value, bytes):
                for inner_number, inner_value in _protobuf_fields(value):
                    if inner_number == _NORMALIZER_CHARSMAP and isinstance(inner_value, bytes):
                        charsmap = inner_value
        return cls(charsmap) if charsmap else None

    def normalize(self, text: str) -> str:
        out: list[str] = []
        for cluster in _GRAPHEME.findall(text):
            if len(cluster.encode("utf-8")) < _WHOLE_CLUSTER_LIMIT:
                replacement = self.transform(cluster)
                if replacement is not None:
                    out.append(replacement)
                    continue
            for char in cluster:
                replacement = self.transform(char)
                out.append(char if replacement is None else replacement)
        return "".join(out)

    def transform(self, chunk: str) -> str | None:
        """Replacement of the shortest key that prefixes ``chunk``; None when no key does."""
        offsets = self._prefix_values(chunk.encode("utf-8"))
        if not offsets:
            return None
        start = offsets[0]
        end = self._replacements.find(b"\0", start)
        return self._replacements[start:len(self._replacements) if end < 0 else end].decode("utf-8")

    def _prefix_values(self, key: bytes) -> list[int]:
        # darts-clone's commonPrefixSearch over 32-bit units (sentencepiece third_party/darts_clone)
        units = self._units
        results: list[int] = []
        position = _offset(units[0])
        for byte in key:
            if byte == 0:
                break
            position ^= byte
            if position >= len(units):
                break
            unit = units[position]
            if _label(unit) != byte:
                break
            position ^= _offset(unit)
            if (unit >> 8) & 1 and position < len(units):   # has a leaf: its value is the offset
                results.append(units[position] & 0x7FFFFFFF)
        return results


def _label(unit: int) -> int:
    return unit & ((1 << 31) | 0xFF)


def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


def _protobuf_fields(buffer: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one protobuf message, by the wire format alone."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        wire_type = key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
            yield key >> 3, value
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            yield key >> 3, buffer[position:position + length]
            position += length
        else:
            raise ValueError(f"not a sentencepiece model: protobuf wire type {wire_type}")


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer):
            raise ValueError("not a sentencepiece model: truncated protobuf")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position
