"""Checking generate()'s arguments before any work is done, with messages that name the problem.

The same checks serve Python callers, ``hub run`` and JSON requests, so types are checked strictly
(``64.0`` or ``"64"`` is not a width; ``True`` is not a number of steps).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from ..pipelines.image_inputs import fit, load_image   # PIL and numpy only: no Paddle at import
from .styles import get_style

MAX_SEED = 2 ** 32 - 1  # seeds are numpy generator seeds, recorded in PNGs as A1111 does (0..2^32-1)
MIN_SIDE = 64
LATENT_SCALE = 8  # the VAE of every SD 1.x/2.x model downsamples by 8; a model's own factor is checked later
MAX_GUIDANCE = 50.0

# generate()'s arguments, in the order of its signature: the Module, the SDK (local and Client), job files and
# serving requests all take these names, and tests hold every signature to this one list
GENERATE_ARGUMENTS = ("text", "style", "negative_text", "width", "height", "steps", "guidance", "seed", "num_images",
                      "scheduler", "output_dir", "model", "guidance_rescale", "image", "mask", "strength")
# diffusers' defaults: image-to-image keeps a fifth of the image's structure, inpainting repaints the mask fully
DEFAULT_STRENGTH = {"img2img": 0.8, "inpaint": 1.0}


def _multiple(name: str, value: int, multiple: int) -> None:
    if value % multiple:
        raise ValueError(f"{name}={value} is not a multiple of {multiple} "
                         f"(try {max(multiple, value // multiple * multiple)})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one call may ask for; a server can lower these (serving_config.json ``init_args``)."""

    max_side: int = 2048
    max_pixels: int = 1024 * 1024
    max_steps: int = 150
    max_images: int = 8  # images per call: prompts x num_images
    max_prompt_chars: int = 2000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class Request:
    """generate()'s arguments, checked; width/height None means the model's own size."""

    texts: list[str]
    negatives: list[str]
    style: str | None
    width: int | None
    height: int | None
    steps: int | None          # None: the model's recommended number (pipelines/defaults.py)
    guidance: float | None     # None: the model's recommended scale
    seed: int | None
    num_images: int
    scheduler: str | None
    output_dir: Path | None
    guidance_rescale: float    # 0: off
    image: Image.Image | None = None   # img2img / inpaint: already resized to width x height
    mask: Image.Image | None = None    # inpaint: "L" mode, white = repaint, the image's size
    strength: float | None = None      # None without an image

    @property
    def task(self) -> str:
        return "txt2img" if self.image is None else ("img2img" if self.mask is None else "inpaint")


def check_request(text: Any, style: Any = None, negative_text: Any = None, width: Any = None, height: Any = None,
                  steps: Any = None, guidance: Any = None, seed: Any = None, num_images: Any = 1,
                  scheduler: Any = None, output_dir: Any = None, guidance_rescale: Any = 0.0, image: Any = None,
                  mask: Any = None, strength: Any = None, limits: Limits = Limits()) -> Request:
    texts = _texts(text, "text", limits, allow_empty=False)
    negatives = _texts("" if negative_text is None else negative_text, "negative_text", limits, allow_empty=True)
    if len(negatives) == 1:
        negatives = negatives * len(texts)
    if len(negatives) != len(texts):
        raise ValueError(f"negative_text has {len(negatives)} entries for {len(texts)} prompts in text "
                         "(give one negative text, or one per prompt)")
    if style == "":
        style = None
    if style is not None:
        get_style(style)
    for name, value in (("width", width), ("height", height)):
        if value is not None:
            _integer(name, value, MIN_SIDE, limits.max_side)
            _multiple(name, value, LATENT_SCALE)
    if image is not None:
        image, mask, width, height, strength = _images(image, mask, width, height, strength, limits)
    elif mask is not None or strength is not None:
        raise ValueError(f"{'mask' if mask is not None else 'strength'} needs an image: give image= (the picture "
                         "to start from; with mask=, the white part of the mask is repainted)")
    if width is not None and height is not None:
        check_size(width, height, LATENT_SCALE, limits)
    if steps is not None:
        _integer("steps", steps, 1, limits.max_steps)
    _integer("num_images", num_images, 1, limits.max_images)
    if len(texts) * num_images > limits.max_images:
        raise ValueError(f"{len(texts)} prompts x num_images={num_images} is {len(texts) * num_images} images; "
                         f"the limit is {limits.max_images} per call")
    if seed is not None:
        _integer("seed", seed, 0, MAX_SEED, hint=" (leave it out, or None, for a random seed)")
    guidance = None if guidance is None else _guidance(guidance)
    return Request(texts, negatives, style, width, height, steps, guidance, seed, num_images,
                   _scheduler(scheduler), check_output_dir(output_dir), _guidance_rescale(guidance_rescale),
                   image, mask, strength)


def _images(image: Any, mask: Any, width: int | None, height: int | None, strength: Any,
            limits: Limits) -> tuple[Image.Image, Image.Image | None, int, int, float]:
    """The start image (and mask) read and resized to the output size: width/height, else the image's own
    size rounded down to a multiple of 8; the mask must be the image's size and is resized with it."""
    picture = read_image("image", image, "RGB")
    marks = None if mask is None else read_image("mask", mask, "L")
    if marks is not None and marks.size != picture.size:
        raise ValueError(f"mask is {marks.width}x{marks.height} but image is {picture.width}x{picture.height}; "
                         "they must be the same size")
    derived = width is None or height is None
    width = picture.width // LATENT_SCALE * LATENT_SCALE if width is None else width
    height = picture.height // LATENT_SCALE * LATENT_SCALE if height is None else height
    for name, value in (("width", width), ("height", height)):
        if value < MIN_SIDE:
            raise ValueError(f"image is {picture.width}x{picture.height}, which makes {name}={value}; images must "
                             f"be at least {MIN_SIDE} pixels on each side")
        if derived and value > limits.max_side:
            raise ValueError(f"image is {picture.width}x{picture.height}, which makes {name}={value}, more than "
                             f"the limit of {limits.max_side}; pass width= and height= to resize it")
    try:
        check_size(width, height, LATENT_SCALE, limits)
    except ValueError as error:
        if not derived:
            raise
        raise ValueError(f"image is {picture.width}x{picture.height}: {error}; pass width= and height= to resize "
                         "it") from None
    if picture.size != (width, height):
        picture = fit(picture, width, height, LATENT_SCALE)   # the pipelines' own resampling
        if marks is not None:  # nearest: a mask stays black and white
            marks = marks.resize((width, height), Image.NEAREST)
    if strength is None:
        strength = DEFAULT_STRENGTH["img2img" if marks is None else "inpaint"]
    strength = _number("strength", strength, lambda v: 0 < v <= 1,
                       "above 0 and at most 1 (how much of the image is repainted; 0.8 is usual)")
    return picture, marks, width, height, strength


def read_image(name: str, value: Any, mode: str) -> Image.Image:
    """``value`` (a path, PIL image or uint8 array) as a PIL image in ``mode``; errors start with ``name``."""
    if isinstance(value, str) and not value:
        raise ValueError(f"{name} is an empty path")
    try:
        return load_image(value, mode)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{name}: {error}") from None


def check_size(width: int, height: int, multiple: int, limits: Limits) -> None:
    """The final size (after the model's default is filled in) against the model and the limits."""
    for name, value in (("width", width), ("height", height)):
        _multiple(name, value, multiple)
    if width * height > limits.max_pixels:
        side = math.isqrt(limits.max_pixels)
        raise ValueError(f"{width}x{height} is {width * height} pixels, more than the limit of {limits.max_pixels} "
                         f"(about {side}x{side})")


def _integer(name: str, value: Any, low: int, high: int, hint: str = "") -> None:
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r}{hint}")
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is out of range: it must be from {low} to {high}{hint}")


def _texts(value: Any, name: str, limits: Limits, allow_empty: bool) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
        raise TypeError(f"{name} must be a string or a list of strings, got {_describe(value)}")
    if not items:
        raise ValueError(f"{name} is an empty list; give at least one prompt")
    for item in items:
        if not allow_empty and not item.strip():
            raise ValueError(f"{name} is empty; describe the picture, e.g. '水墨山水，远山，小船'")
        if len(item) > limits.max_prompt_chars:
            raise ValueError(f"{name} has {len(item)} characters, more than the limit of {limits.max_prompt_chars}")
    return list(items)


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value if not isinstance(v, str)})
        return f"a list holding {', '.join(kinds)}"
    return f"{type(value).__name__} {value!r}"


def _number(name: str, value: Any, in_range: Callable[[float], bool], expected: str) -> float:
    """A finite int or float (not a bool) for which ``in_range`` holds; ``expected`` words the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and in_range(value)):
        raise ValueError(f"{name}={value} is out of range: it must be {expected}")
    return float(value)


def _guidance(value: Any) -> float:
    return _number("guidance", value, lambda v: 0 <= v <= MAX_GUIDANCE, f"from 0 to {MAX_GUIDANCE:g} (7.5 is usual)")


def _guidance_rescale(value: Any) -> float:
    """Lin et al. 2023 (arXiv:2305.08891) section 3.4: 0 is off; the paper uses 0.7. None means off too, as
    the command line and a Client send nothing for an option left out."""
    if value is None:
        return 0.0
    return _number("guidance_rescale", value, lambda v: 0 <= v <= 1, "from 0 (off) to 1 (0.7 is usual)")


def _scheduler(value: Any) -> str | None:
    if value is None or value == "":
        return None
    from ..schedulers import valid_names

    names = valid_names()
    if not isinstance(value, str):
        raise TypeError(f"scheduler must be a string (one of {', '.join(names)}), got {value!r}")
    if value not in names:
        raise ValueError(f"unknown scheduler {value!r}; valid schedulers: {', '.join(names)}")
    return value


def check_output_dir(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"output_dir must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {os.fspath(value)!r} exists and is not a folder")
    # checked before generating: the first existing ancestor must be a folder the folder can be made in
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"output_dir {os.fspath(value)!r} cannot be created: {os.fspath(existing)!r} is a file")
    return path


def scheduler_names() -> Sequence[str]:
    from ..schedulers import valid_names

    return valid_names()
