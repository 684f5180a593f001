"""Reading a diffusers pipeline's ``tokenizer/`` folder: configs and the special-token settings.

Files: ``tokenizer_config.json`` (``model_max_length``, ``do_lower_case``, token strings,
``added_tokens_decoder``, ``tokenizer_class``), the older ``special_tokens_map.json``, and maybe
``tokenizer.json`` (the ``tokenizers`` serialization). Which special tokens end up matched inside the
text follows transformers 5.23 ``from_pretrained`` (tokenization_utils_base.py, _from_pretrained, and
tokenization_utils_tokenizers.py, __init__): ``added_tokens_decoder`` first, in id order, then every
named special token (bos/eos/unk/sep/pad/cls/mask, extra special tokens) not yet among them.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from ..json_files import read_json_object
from .added_tokens import AddedToken

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
TOKENIZER_JSON = "tokenizer.json"
#: transformers' SPECIAL_TOKENS_ATTRIBUTES
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_EXTRA_TOKEN_KEYS = ("additional_special_tokens", "extra_special_tokens")


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """An added token as a config describes it; the id comes from the vocabulary when possible."""
    content: str
    normalized: bool = False
    special: bool = True
    declared_id: int | None = None


@dataclasses.dataclass
class TokenSettings:
    """Named special tokens (``"pad_token" -> "[PAD]"``) and the added tokens, in the reference's order."""
    named: dict[str, str]
    added: list[TokenSpec]

    @classmethod
    def from_names(cls, named: Mapping[str, str | None]) -> "TokenSettings":
        kept = {k: v for k, v in named.items() if v is not None}
        return cls(kept, [TokenSpec(v) for v in dict.fromkeys(kept.values())])

    def resolve(self, token_to_id: Callable[[str], int | None]) -> list[AddedToken]:
        """Ids for the added tokens: the vocabulary's id, else the id the config declared."""
        tokens = []
        for spec in self.added:
            token_id = token_to_id(spec.content)
            if token_id is None:
                token_id = spec.declared_id
            if token_id is None:
                raise ValueError(f"special token {spec.content!r} is not in the vocabulary "
                                 "and the config gives it no id")
            tokens.append(AddedToken(spec.content, token_id, spec.normalized, spec.special))
        return tokens


class TokenizerFolder:
    """The files of one tokenizer folder, read once."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"tokenizer folder not found: {self.path}")
        self.config: dict[str, Any] = self._json(TOKENIZER_CONFIG) or {}

    def file(self, name: str) -> str | None:
        """Path of ``name`` inside the folder, or None when absent."""
        path = os.path.join(self.path, name)
        return path if os.path.isfile(path) else None

    def require(self, *names: str) -> list[str]:
        paths = [self.file(n) for n in names]
        missing = [n for n, p in zip(names, paths) if p is None]
        if missing:
            raise FileNotFoundError(f"{self.path} lacks {', '.join(missing)}")
        return paths  # type: ignore[return-value]

    def tokenizer_json(self) -> dict[str, Any] | None:
        return self._json(TOKENIZER_JSON)

    def model_max_length(self, default: int) -> int:
        """``model_max_length`` of the config; transformers' 'unset' sentinel (1e30) means ``default``."""
        value = self.config.get("model_max_length")
        return default if value is None or value > 1e12 else int(value)

    def token_settings(self, defaults: Mapping[str, str | None]) -> TokenSettings:
        """Named and added tokens: class defaults, overridden by the folder's configs."""
        config = dict(self.config)
        decoder = config.get("added_tokens_decoder")
        if decoder is None:   # legacy folders: special_tokens_map.json wins, tokenizer.json lists added tokens
            config.update(self._json(SPECIAL_TOKENS_MAP) or {})
            serialized = (self.tokenizer_json() or {}).get("added_tokens", [])
            decoder = {str(t["id"]): t for t in serialized}
        added = [_spec(value, declared_id=int(key)) for key, value in sorted(decoder.items(), key=lambda kv: int(kv[0]))]
        by_content = {spec.content: spec for spec in added}
        named = {name: defaults.get(name) for name in NAMED_TOKENS}
        wanted: list[TokenSpec] = []
        for name in NAMED_TOKENS:
            if config.get(name) is not None:
                named[name] = _content(config[name])
                wanted.append(_spec(config[name]))
            elif named[name] is not None:
                wanted.append(TokenSpec(named[name]))
        for key in _EXTRA_TOKEN_KEYS:
            extra = config.get(key) or []
            wanted.extend(_spec(value) for value in (extra.values() if isinstance(extra, dict) else extra))
        for spec in wanted:
            if spec.content not in by_content:
                by_content[spec.content] = spec
                added.append(spec)
        return TokenSettings({k: v for k, v in named.items() if v is not None}, added)

    def _json(self, name: str) -> dict[str, Any] | None:
        path = self.file(name)
        if path is None:
            return None
        return read_json_object(path)


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"a special token must be a string or {{'content': ...}}, got {value!r}")


def _spec(value: Any, declared_id: int | None = None) -> TokenSpec:
    """A config entry (plain string, or an AddedToken dict) -> TokenSpec; defaults as transformers'."""
    if isinstance(value, str):
        return TokenSpec(value, normalized=False, special=True, declared_id=declared_id)
    content = _content(value)
    special = bool(value.get("special", True))
    normalized = bool(value.get("normalized", not special))
    return TokenSpec(content, normalized=normalized, special=special, declared_id=declared_id)
