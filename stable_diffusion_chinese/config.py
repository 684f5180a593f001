"""Typed model configs that read diffusers/transformers ``config.json`` keys.

Each model declares one dataclass; unknown keys in a ``config.json`` (bookkeeping such as
``_class_name`` or options at their default) are ignored, and options we do not implement are
rejected by the model's ``validate`` with a message that names them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, TypeVar

from .json_files import read_json_object

C = TypeVar("C", bound="ModelConfig")


class UnsupportedConfigError(ValueError):
    """A config asks for an option this engine does not implement."""


@dataclasses.dataclass
class ModelConfig:
    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: _tuples(v) for k, v in values.items() if k in names})
        config.validate(values)
        return config

    @classmethod
    def from_json(cls: type[C], path: str | os.PathLike) -> C:
        return cls.from_dict(read_json_object(path))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def save_json(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, ensure_ascii=False)

    def validate(self, raw: Mapping[str, Any]) -> None:
        """Reject options of ``raw`` we do not implement. Override per model."""

    @staticmethod
    def require(raw: Mapping[str, Any], key: str, allowed) -> None:
        """``raw[key]`` must be absent or one of ``allowed``."""
        if key in raw and raw[key] not in allowed:
            raise UnsupportedConfigError(
                f"config option {key}={raw[key]!r} is not supported (supported: {list(allowed)})")


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value
