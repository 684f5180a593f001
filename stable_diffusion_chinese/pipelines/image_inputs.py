"""Images given to the pipelines: read from a path, PIL image or array, checked, resized. PIL and numpy only
(no Paddle), so the service and the SDK's client can check and read images before any model is loaded."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

MAX_PIXELS = 2048 * 2048


def check_size(width: int, height: int, multiple: int = 8) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value <= 0 or value % multiple:
            raise ValueError(f"{name}={value} must be a positive multiple of {multiple}")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{width}x{height} is more than {MAX_PIXELS} pixels")


def load_image(image: Any, mode: str = "RGB") -> Image.Image:
    """A PIL image in ``mode`` from a PIL image, a path, or an HxW(xC) uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        try:
            image = Image.open(image)
            image.load()
        except (OSError, ValueError) as err:
            reason = getattr(err, "strerror", None) or err   # "No such file or directory", not the path again
            raise ValueError(f"cannot read image {os.fspath(image)!r}: {reason}") from None
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be HxW or HxWxC uint8, got {image.dtype} {list(image.shape)}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a path or a uint8 array, got {type(image).__name__}")
    return image if image.mode == mode else image.convert(mode)


def fit(image: Image.Image, width: int | None, height: int | None, multiple: int = 8) -> Image.Image:
    """Resize to ``width`` x ``height``; missing sides default to the image's, rounded down to ``multiple``."""
    w = image.width // multiple * multiple if width is None else width
    h = image.height // multiple * multiple if height is None else height
    check_size(w, h, multiple)
    return image if image.size == (w, h) else image.resize((w, h), Image.LANCZOS)
