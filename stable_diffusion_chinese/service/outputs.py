"""Images out: PNG files and bytes that carry their generation parameters.

Every image returned by ``generate`` has the same two ``info`` entries a PNG read back from disk has
(``parameters``, A1111's text, and ``sd_chinese_params``, our JSON), whether it was made locally or
came from a server. Files are named as A1111 names them (``00012-42.png``: running number, seed) and
written atomically by ``pipelines.metadata.save_png``.
"""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Sequence

from PIL import Image, PngImagePlugin

from ..pipelines.metadata import (A1111_KEY, JSON_KEY, GenerationParams, parse_json_text, save_png,
                                  to_a1111_text, to_json_text)

_NUMBERED = re.compile(r"^(\d{5,})-")


def attach_params(image: Image.Image, params: GenerationParams) -> Image.Image:
    image.info[A1111_KEY] = to_a1111_text(params)
    image.info[JSON_KEY] = to_json_text(params)
    return image


def params_of(image: Image.Image) -> GenerationParams:
    """The parameters attached to (or read from) ``image``."""
    if JSON_KEY not in image.info:
        raise ValueError(f"the image carries no {JSON_KEY!r} parameters")
    return parse_json_text(image.info[JSON_KEY])


def png_bytes(image: Image.Image, params: GenerationParams) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, to_a1111_text(params))
    info.add_text(JSON_KEY, to_json_text(params))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def png_base64(image: Image.Image, params: GenerationParams) -> str:
    return base64.b64encode(png_bytes(image, params)).decode("ascii")


def plain_png_base64(image: Image.Image) -> str:
    """An input image (img2img's start, a mask) as base64 PNG, as a Client sends it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_from_base64(text: str) -> Image.Image:
    """A PNG sent as base64, with its text chunks in ``info`` (as for any PNG PIL opens)."""
    image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    image.load()
    return image


def save_images(images: Sequence[Image.Image], params: Sequence[GenerationParams], folder: Path) -> list[Path]:
    """Write each image as ``NNNNN-SEED.png`` in ``folder``, numbering on from the files already there."""
    folder.mkdir(parents=True, exist_ok=True)
    start = next_number(folder)
    paths = []
    for offset, (image, p) in enumerate(zip(images, params)):
        path = save_png(image, folder / f"{start + offset:05d}-{p.seed}.png", p)
        image.info["path"] = str(path)
        paths.append(path)
    return paths


def next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1
