"""Where the service keeps its files, and the user's configuration.

- ``SD_CHINESE_HOME`` (default ``~/.stable_diffusion_chinese``) holds ``config.json``, downloaded models
  (``models/NAME``) and converted models (``cache/converted/``).
- ``SD_CHINESE_MODEL`` chooses the model (it wins over ``config.json``; a ``model=`` argument wins over both).
- ``config.json`` is a JSON object with any of the keys in ``CONFIG_KEYS``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

ENV_HOME = "SD_CHINESE_HOME"
ENV_MODEL = "SD_CHINESE_MODEL"
CONFIG_FILE = "config.json"
CONFIG_KEYS = {
    "model": "the model to use: a folder, a single-file checkpoint, a downloaded model's name, or 'embedded'",
    "download_url": "default archive URL for `sd-chinese download`",
    "download_sha256": "sha256 of that archive",
}


class ConfigError(ValueError):
    """config.json cannot be read or holds something we do not understand."""


@dataclasses.dataclass(frozen=True)
class Settings:
    home: Path
    environ: Mapping[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        home = environ.get(ENV_HOME) or os.path.join(os.path.expanduser("~"), ".stable_diffusion_chinese")
        return cls(Path(home).expanduser(), environ)

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def converted_dir(self) -> Path:
        return self.home / "cache" / "converted"

    @property
    def locks_dir(self) -> Path:
        return self.home / "cache" / "locks"

    def env_model(self) -> str | None:
        return self.environ.get(ENV_MODEL) or None

    def config(self) -> dict[str, str]:
        return read_config(self.config_file)


def read_config(path: Path) -> dict[str, str]:
    """The config file's settings ({} if there is no file); unknown keys and non-string values are errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a JSON object such as {{\"model\": \"/path/to/model\"}}")
    _check_config(values, str(path))
    return values


def _check_config(values: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(CONFIG_KEYS)}")
    for key, value in values.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")


def update_config(path: Path, **updates: str) -> dict[str, str]:
    """Set keys in the config file (written atomically) and return the new settings."""
    values = {**read_config(path), **updates}
    _check_config(values, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return values
