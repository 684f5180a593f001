"""Which model to generate with, and turning it into a Paddle pipeline folder.

Order of choice: the ``model=`` argument, then ``SD_CHINESE_MODEL``, then ``"model"`` in config.json, then
the embedded default model shipped in ``assets/embedded``. A choice is a Paddle folder (loaded as is), a
diffusers folder or a single-file checkpoint (converted once, cached under ``cache/converted`` keyed by the
source's path, sizes and modification times), the name of a downloaded model, or ``"embedded"``. A single
file takes the ``tokenizer/`` folder next to it when there is one, else SD 1.x's CLIP tokenizer (shipped).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Iterator

from .settings import ENV_MODEL, Settings

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
NETWORKS = ("unet", "vae", "text_encoder")  # the components that carry weights
PADDLE_WEIGHTS = "model.pdparams"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
SOURCE_RECORD = ".sd_chinese_source.json"  # written into each converted folder: what it was converted from


class ModelNotFoundError(FileNotFoundError):
    """The chosen model does not exist, or is not something we can load."""


class EmbeddedWeightsMissingError(FileNotFoundError):
    """This installation's embedded default model has configs but no weights."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    path: Path
    #: where the choice came from, for messages: "model= argument", "SD_CHINESE_MODEL", ...
    origin: str

    @property
    def is_embedded(self) -> bool:
        return self.path == embedded_model_folder()


def embedded_model_folder() -> Path:
    return Path(str(resources.files("stable_diffusion_chinese").joinpath("assets", "embedded"))).resolve()


def choose_model(model: str | os.PathLike | None, settings: Settings) -> ModelChoice:
    """The model to use and where that choice came from (see the module docstring for the order)."""
    if model is not None:
        return _resolve(model, "the model= argument", settings, base=Path.cwd())
    if settings.env_model():
        return _resolve(settings.env_model(), f"the {ENV_MODEL} environment variable", settings, base=Path.cwd())
    configured = settings.config().get("model")
    if configured:
        return _resolve(configured, f"'model' in {settings.config_file}", settings, base=settings.config_file.parent)
    return ModelChoice(embedded_model_folder(), "the embedded default (no model configured)")


def _resolve(spec: str | os.PathLike, origin: str, settings: Settings, base: Path) -> ModelChoice:
    if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec):
        raise TypeError(f"model (from {origin}) must be a non-empty path or name, got {spec!r}")
    text = os.fspath(spec)
    if text == EMBEDDED:
        return ModelChoice(embedded_model_folder(), origin)
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if path.exists():
        return ModelChoice(path.resolve(), origin)
    downloaded = settings.models_dir / text
    if os.sep not in text and "/" not in text and downloaded.is_dir():
        return ModelChoice(downloaded.resolve(), origin)
    names = sorted(p.name for p in settings.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if settings.models_dir.is_dir() else []
    raise ModelNotFoundError(
        f"model {text!r} (from {origin}) not found: no such file or folder, and no downloaded model of that name "
        f"in {settings.models_dir} (downloaded: {', '.join(names) or 'none'}; '{EMBEDDED}' is the built-in one)")


# ------------------------------------------------------------------------------------------ kinds

def model_kind(path: Path) -> str:
    """"paddle" (loads as is), "diffusers" (converted first) or "single-file" (converted first)."""
    if path.is_file():
        if path.name.endswith(SINGLE_FILE_SUFFIXES):
            return "single-file"
        raise ModelNotFoundError(f"{path} is not a checkpoint we read (expected one of "
                                 f"{', '.join(SINGLE_FILE_SUFFIXES)}, or a model folder)")
    if not (path / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{path} is not a Stable Diffusion model folder: it has no model_index.json (expected a diffusers "
            "pipeline folder, a Paddle folder written by `sd-chinese convert`, or a single-file checkpoint)")
    present = [name for name in NETWORKS if (path / name).is_dir()]
    if present and all((path / name / PADDLE_WEIGHTS).is_file() for name in present):
        return "paddle"
    return "diffusers"


def check_embedded_weights(folder: Path) -> None:
    """A clear error if the embedded model in ``folder`` ships configs without weights."""
    missing = [f"{name}/{PADDLE_WEIGHTS}" for name in NETWORKS if not (folder / name / PADDLE_WEIGHTS).is_file()]
    if missing:
        raise EmbeddedWeightsMissingError(
            f"the embedded default model has no weights in {folder} (missing {', '.join(missing)}); this "
            f"installation ships without them. Choose a model with model=..., the {ENV_MODEL} environment "
            "variable or 'model' in config.json, or fetch one with `sd-chinese download URL --sha256 HEX --use`")


# ------------------------------------------------------------------------------------- conversion

def paddle_folder(choice: ModelChoice, settings: Settings) -> Path:
    """A Paddle pipeline folder for ``choice``: itself, or its cached conversion (made now if needed)."""
    if choice.is_embedded:
        check_embedded_weights(choice.path)
        return choice.path
    kind = model_kind(choice.path)
    if kind == "paddle":
        return choice.path
    return _converted(choice.path, _tokenizer_next_to(choice.path) if kind == "single-file" else None, settings)


def _tokenizer_next_to(checkpoint: Path) -> Path | None:
    """A single file's own ``tokenizer/`` folder beside it, if any; without one the conversion writes SD 1.x's
    CLIP tokenizer, which the package ships."""
    folder = checkpoint.parent / "tokenizer"
    return folder if folder.is_dir() else None


def fingerprint(source: Path) -> str:
    """Changes when any file of ``source`` changes size or modification time (or the path changes)."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    entries = [[str(p.relative_to(source)) if p != source else p.name, p.stat().st_size, p.stat().st_mtime_ns]
               for p in files]
    return hashlib.sha256(json.dumps([str(source), entries]).encode()).hexdigest()[:16]


def _converted(source: Path, tokenizer: Path | None, settings: Settings) -> Path:
    # a tokenizer folder added, changed or removed next to a single file changes the conversion too
    key = fingerprint(source) if tokenizer is None else \
        hashlib.sha256(f"{fingerprint(source)}+{fingerprint(tokenizer)}".encode()).hexdigest()[:16]
    cache = settings.converted_dir
    target = cache / f"{source.stem if source.is_file() else source.name}-{key}"
    if (target / SOURCE_RECORD).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    with _lock(settings.locks_dir / f"{target.name}.lock"):
        if not (target / SOURCE_RECORD).is_file():  # another process may have converted it meanwhile
            _convert_with_progress(source, target, tokenizer)
            (target / SOURCE_RECORD).write_text(json.dumps({"source": str(source), "fingerprint": key}),
                                                encoding="utf-8")
    _remove_stale_conversions(cache, source, keep=target)
    return target


def _convert_with_progress(source: Path, target: Path, tokenizer: Path | None) -> None:
    from tqdm.auto import tqdm

    from ..weights.convert import convert

    log.info("converting %s to Paddle format once (cached in %s)", source, target)
    options = {"tokenizer": str(tokenizer)} if tokenizer else {}
    with tqdm(desc=f"converting {source.name}", unit="step", file=sys.stderr) as bar:
        def progress(done: int, total: int, name: str, summary: str | None) -> None:
            bar.total = total
            if summary is None:
                bar.set_postfix_str(name)
            else:
                bar.update(done - bar.n)

        convert(source, target, overwrite=True, progress=progress, **options)


def _remove_stale_conversions(cache: Path, source: Path, keep: Path) -> None:
    """Older conversions of the same source (it changed since): they would never be used again."""
    for folder in cache.iterdir():
        record = folder / SOURCE_RECORD
        if folder == keep or not record.is_file():
            continue
        try:
            stale = json.loads(record.read_text(encoding="utf-8")).get("source") == str(source)
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes converting the same model (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
