"""JSON requests from ``hub serving`` -> base64 PNGs plus the parameters used.

PaddleHub passes the request's JSON keys as keyword arguments and turns any exception into
``{"status": "101", "msg": str(error)}`` (paddlehub 2.4.0 ``serving/app_compat.py predict_v2``), so every
problem here is raised as an error whose text names it. ``model`` and ``output_dir`` are the server's
business (its init_args / environment), never a client's: a client could otherwise make the server read
or write any path. For the same reason ``image`` and ``mask`` are base64-encoded image files, never paths.
"""
from __future__ import annotations

import binascii
import dataclasses
from typing import Any, Mapping

from PIL import Image

from .arguments import GENERATE_ARGUMENTS, Limits, scheduler_names
from .engine import TextToImage
from .outputs import image_from_base64, png_base64
from .styles import describe_styles

SERVER_ONLY = {
    "model": "the server chooses its model (init_args 'model' in serving_config.json, or SD_CHINESE_MODEL)",
    "output_dir": "the server writes no files for clients; save the returned PNGs on the client",
}
REQUEST_KEYS = tuple(name for name in GENERATE_ARGUMENTS if name not in SERVER_ONLY)
LISTS = ("styles", "schedulers", "limits")
IMAGE_KEYS = ("image", "mask")  # sent as base64 PNG / JPEG / WebP files


def handle_request(engine: TextToImage, request: Mapping[str, Any]) -> dict[str, Any]:
    """``{"text": ..., ...}`` -> ``{"images": [base64 PNG], "parameters": [...], "model": name}``;
    ``{"list": "styles" | "schedulers" | "limits"}`` -> that table."""
    if "list" in request:
        return _listing(engine.limits, request)
    _check_keys(request)
    images = {key: _decode_image(key, request[key]) for key in IMAGE_KEYS if request.get(key) is not None}
    result = engine.generate(**{**request, **images}, progress=False)
    return {
        "images": [png_base64(image, p) for image, p in zip(result.images, result.params)],
        "parameters": [dataclasses.asdict(p) for p in result.params],
        "model": result.model,
    }


def _check_keys(request: Mapping[str, Any]) -> None:
    for key, reason in SERVER_ONLY.items():
        if key in request:
            raise ValueError(f"'{key}' is not accepted in a request: {reason}")
    unknown = sorted(set(request) - set(REQUEST_KEYS))
    if unknown:
        raise ValueError(f"unknown request key(s) {', '.join(map(repr, unknown))}; accepted keys: "
                         f"{', '.join(REQUEST_KEYS)} (or {{\"list\": \"styles\"}})")
    if "text" not in request:
        raise ValueError("the request has no 'text': send {\"text\": \"水墨山水\", ...} "
                         "(a string or a list of strings)")


def _decode_image(key: str, value: Any) -> Image.Image:
    if not isinstance(value, str):
        raise TypeError(f"'{key}' must be a base64-encoded image file (PNG or JPEG; a server reads no paths), "
                        f"got {type(value).__name__}")
    try:
        return image_from_base64(value)
    except binascii.Error:
        raise ValueError(f"'{key}' is not valid base64: send the image file's bytes base64-encoded") from None
    except (OSError, ValueError):   # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"'{key}' decodes to bytes that are not an image file PIL can read (PNG, JPEG, ...)") \
            from None


def _listing(limits: Limits, request: Mapping[str, Any]) -> dict[str, Any]:
    what = request["list"]  # other keys are ignored: serving_config.json predict_args are merged into every request
    if what not in LISTS:
        raise ValueError(f"'list' must be one of {', '.join(LISTS)}, got {what!r}")
    if what == "styles":  # a list, not an object: Flask sorts object keys, and the table's order is meaningful
        return {"styles": [{"name": name, **fragments} for name, fragments in describe_styles().items()]}
    if what == "schedulers":
        return {"schedulers": list(scheduler_names())}
    return {"limits": dataclasses.asdict(limits)}
