"""Generation parameters stored in, and read back from, PNG files.

Each PNG gets two text chunks:

- ``parameters``: AUTOMATIC1111's infotext, the text A1111's "PNG Info" tab and Civitai read::

      一只猫, 水墨画
      Negative prompt: 模糊
      Steps: 20, Sampler: DPMSolverMultistep, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: taiyi

- ``sd_chinese_params``: the same fields as JSON, the exact record that ``read_png_params`` prefers.

Text that is not Latin-1 (Chinese) goes into an iTXt chunk (UTF-8), Latin-1 text into tEXt, as PNG requires.
Files are written atomically (temporary file in the same folder, fsync, ``os.replace``).
"""
from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from PIL import Image, PngImagePlugin

A1111_KEY = "parameters"
JSON_KEY = "sd_chinese_params"
JSON_VERSION = 1


@dataclass(kw_only=True)
class GenerationParams:
    """What produced an image.

    ``sampler`` is the scheduler's name; ``strength`` is img2img's denoising strength; ``clip_skip`` is
    diffusers' and ``TextEncoder.encode``'s (0 = last CLIP layer, 1 = penultimate), written to A1111's text as
    "Clip skip" one higher (A1111 counts from 1); ``style`` is the style preset applied, if any.
    """

    prompt: str
    negative_prompt: str = ""
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str | None = None
    strength: float | None = None
    style: str | None = None
    clip_skip: int | None = None
    eta: float | None = None
    extra: dict[str, str] = field(default_factory=dict)  # more "Label: value" pairs, e.g. {"Model hash": "45dee52b"}

    def __post_init__(self) -> None:
        for name, kind in _FIELD_TYPES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"GenerationParams.{name} must be {_type_names(kind)}, got {value!r}")
        for number in ("steps", "width", "height"):
            if getattr(self, number) < 1:
                raise ValueError(f"GenerationParams.{number} must be >= 1, got {getattr(self, number)}")
        if self.clip_skip is not None and self.clip_skip < 0:
            raise ValueError(f"GenerationParams.clip_skip must be >= 0 (0 = last layer), got {self.clip_skip}")
        _check_extra(self.extra)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "prompt": str, "negative_prompt": str, "steps": int, "sampler": str, "cfg_scale": (int, float), "seed": int,
    "width": int, "height": int, "model": str, "strength": (int, float), "style": str, "clip_skip": int,
    "eta": (int, float), "extra": dict,
}
_OPTIONAL = {"model", "strength", "style", "clip_skip", "eta"}


def _type_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


# ------------------------------------------------------------------------------------- A1111 infotext

# Our fields in A1111's order (modules/processing.py create_infotext); "Size" (width x height) goes after Seed.
# (field, A1111 label, type of the value, what A1111's number adds to ours)
_LABELS: list[tuple[str, str, Callable[[str], Any], int]] = [
    ("steps", "Steps", int, 0),
    ("sampler", "Sampler", str, 0),
    ("cfg_scale", "CFG scale", float, 0),
    ("seed", "Seed", int, 0),
    ("model", "Model", str, 0),
    ("strength", "Denoising strength", float, 0),
    ("clip_skip", "Clip skip", int, 1),  # A1111's "Clip skip: 2" is diffusers' clip_skip=1
    ("eta", "Eta", float, 0),
    ("style", "Style", str, 0),
]
_SIZE_LABEL = "Size"
_RESERVED_LABELS = {label for _, label, _, _ in _LABELS} | {_SIZE_LABEL}
_NEGATIVE_PREFIX = "Negative prompt:"

# A1111 modules/infotext_utils.py `re_param`: "Label: value" where value is a JSON string or runs to the comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
# A label _PARAM reads back unchanged: no leading/trailing space, at least two characters.
_LABEL = re.compile(r"\w[\w \-/]*\w")


def _check_extra(extra: dict) -> None:
    for label, value in extra.items():
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise ValueError(f"extra label {label!r} is not a valid infotext label "
                             "(letters, digits, _, space, - or /; at least 2 characters, no outer spaces)")
        if label in _RESERVED_LABELS:
            raise ValueError(f"extra label {label!r} is one of GenerationParams' own fields; set the field instead")
        if not isinstance(value, str):
            raise TypeError(f"extra[{label!r}] must be a str, got {type(value).__name__}")


def _quote(value: Any) -> str:
    """A1111's ``quote``: JSON-quote a value holding ``,`` ``:`` or a newline.

    We also quote values that would not survive being read back unquoted: empty, surrounded by whitespace, or
    starting with a double quote. A1111 reads all of these (it JSON-decodes any quoted value).
    """
    text = str(value)
    needs_quotes = (any(c in text for c in ",:\n") or text == "" or text != text.strip() or text.startswith('"'))
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def to_a1111_text(params: GenerationParams) -> str:
    """A1111's ``parameters`` infotext: prompt, ``Negative prompt:`` line (only if non-empty), then the settings.

    ``parse_a1111_text`` inverts it exactly unless the prompt starts with whitespace (A1111 strips the whole
    text) or has a line starting with ``Negative prompt:``; the JSON chunk keeps even those exactly.
    """
    pairs = [(label, _shifted(getattr(params, name), offset)) for name, label, _, offset in _LABELS]
    pairs.insert(4, (_SIZE_LABEL, f"{params.width}x{params.height}"))  # after Seed, as in A1111
    pairs += params.extra.items()
    settings = ", ".join(f"{label}: {_quote(value)}" for label, value in pairs if value is not None)
    negative = f"\n{_NEGATIVE_PREFIX} {params.negative_prompt}" if params.negative_prompt else ""
    return f"{params.prompt}{negative}\n{settings}".strip()


def _shifted(value: Any, offset: int) -> Any:
    return value + offset if offset and value is not None else value


def parse_a1111_text(text: str) -> GenerationParams:
    """Read A1111's infotext (ours or A1111's own) back into ``GenerationParams``.

    Labels we have no field for (``Model hash``, ``Schedule type``...) land in ``extra`` as strings.
    """
    if not isinstance(text, str):
        raise TypeError(f"infotext must be a str, got {type(text).__name__}")
    # split("\n"), not splitlines(): a prompt may hold \r, \x85 or \u2028, which are not line ends here.
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # A1111's test for "the last line is the settings line"
        raise ValueError(f"no settings line (e.g. 'Steps: 20, Sampler: ..., Seed: 42') at the end of {text!r}")
    prompt, negative = _split_prompts(lines)
    values = {label.strip(): _unquote(value) for label, value in _PARAM.findall(last)}
    return _params_from_labels(values, prompt, negative)


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    for i, line in enumerate(lines):
        if line.startswith(_NEGATIVE_PREFIX):
            first = line[len(_NEGATIVE_PREFIX):]
            first = first[1:] if first.startswith(" ") else first  # the one space the writer puts there
            return "\n".join(lines[:i]), "\n".join([first, *lines[i + 1:]])
    return "\n".join(lines), ""


def _params_from_labels(values: dict[str, str], prompt: str, negative: str) -> GenerationParams:
    required = [label for name, label, _, _ in _LABELS if name not in _OPTIONAL] + [_SIZE_LABEL]
    missing = [label for label in required if label not in values]
    if missing:
        raise ValueError(f"infotext lacks {', '.join(missing)}; found only {', '.join(values) or 'nothing'}")
    size = _SIZE.match(values.pop(_SIZE_LABEL))
    if size is None:
        raise ValueError("infotext Size must look like 512x512")
    kwargs: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative,
                              "width": int(size.group(1)), "height": int(size.group(2))}
    for name, label, kind, offset in _LABELS:
        if label in values:
            raw = values.pop(label)
            try:
                kwargs[name] = _shifted(kind(raw), -offset)
            except ValueError:
                raise ValueError(f"infotext {label} {raw!r} is not a valid {kind.__name__}") from None
    return GenerationParams(**kwargs, extra=values)


# ------------------------------------------------------------------------------------------- PNG files


def to_json_text(params: GenerationParams) -> str:
    """The ``sd_chinese_params`` chunk: ``{"version": 1, "params": {field: value, ...}}``."""
    return json.dumps({"version": JSON_VERSION, "params": asdict(params)}, ensure_ascii=False)


def parse_json_text(text: str) -> GenerationParams:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{JSON_KEY} chunk is not valid JSON: {error}") from None
    is_record = isinstance(record, dict) and isinstance(record.get("params"), dict)
    if not is_record or record.get("version") != JSON_VERSION:
        raise ValueError(f"{JSON_KEY} chunk is not a version-{JSON_VERSION} record: {text[:200]!r}")
    unknown = set(record["params"]) - {f.name for f in fields(GenerationParams)}
    if unknown:
        raise ValueError(f"{JSON_KEY} chunk has unknown fields {sorted(unknown)}")
    return GenerationParams(**record["params"])


def _png_info(params: GenerationParams) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    # PNG's tEXt holds Latin-1 only; Pillow's add_text writes tEXt when the text fits and iTXt (UTF-8) otherwise.
    info.add_text(A1111_KEY, to_a1111_text(params))
    info.add_text(JSON_KEY, to_json_text(params))
    return info


def save_png(image: Image.Image, path: str | os.PathLike, params: GenerationParams) -> Path:
    """Write ``image`` as a PNG carrying ``params``, atomically: the file at ``path`` is either the old one or
    the complete new one, never a partial write, and no temporary file is left behind on failure."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    if not isinstance(params, GenerationParams):
        raise TypeError(f"params must be GenerationParams, got {type(params).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_png writes PNG files; {str(path)!r} should end in .png")
    info = _png_info(params)
    # Same directory, so os.replace is a rename within one file system. os.open with 0o666 lets the umask
    # decide the final permissions, as for any new file (tempfile would leave them at 0o600).
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            image.save(file, format="PNG", pnginfo=info)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # makes the rename itself durable
    return path


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory for fsync; its rename is durable as it is
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_png_params(path: str | os.PathLike) -> GenerationParams:
    """The parameters stored in a PNG: our JSON chunk if present, else A1111's ``parameters`` text."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise ValueError(f"{os.fspath(path)!r} is a {image.format} image, not a PNG")
        texts = dict(image.text)
    if JSON_KEY in texts:
        return parse_json_text(texts[JSON_KEY])
    if A1111_KEY in texts:
        return parse_a1111_text(texts[A1111_KEY])
    raise ValueError(f"{os.fspath(path)!r} holds no generation parameters "
                     f"(neither a {JSON_KEY!r} nor a {A1111_KEY!r} text chunk)")
