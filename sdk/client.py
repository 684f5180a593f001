"""``Client(url).generate(...)``: the same call as ``sdc_sdk.generate``, answered by a served module.

The server is ``hub serving start -m stable_diffusion_chinese`` (default port 8866). Its images come back as
PNGs carrying their parameters, so they have the same ``info`` as local ones, and ``output_dir`` writes
them here, named and written atomically as local generation does. The server chooses its model.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from PIL import Image

from stable_diffusion_chinese.service.arguments import check_output_dir
from stable_diffusion_chinese.service.arguments import read_image
from stable_diffusion_chinese.service.outputs import image_from_base64, params_of, plain_png_base64, save_images
from .local import ImageInput

MODULE = "stable_diffusion_chinese"
DEFAULT_URL = "http://127.0.0.1:8866"


def _png_base64(name: str, value: ImageInput | None, mode: str) -> str | None:
    return None if value is None else plain_png_base64(read_image(name, value, mode))


class ServingError(ValueError):
    """The server refused the request (PaddleHub status "101": bad input) or failed; the message is the server's."""


class Client:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 600.0):
        """``url``: the server (``http://host:8866``) or its full predict address."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        url = url.rstrip("/")
        self.url = url if url.endswith(f"/predict/{MODULE}") else f"{url}/predict/{MODULE}"
        self.timeout = timeout

    def generate(self, text: str | list[str], style: str | None = None, negative_text: str | list[str] | None = None,
                 width: int | None = None, height: int | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int | None = None, num_images: int = 1,
                 scheduler: str | None = None, output_dir: str | os.PathLike | None = None,
                 model: None = None, guidance_rescale: float = 0.0, image: ImageInput | None = None,
                 mask: ImageInput | None = None, strength: float | None = None) -> list[Image.Image]:
        """As ``sdc_sdk.generate``; ``model`` must stay None (the server's init_args choose it). ``image`` and
        ``mask`` are read here and sent as PNG (the server reads no paths)."""
        if model is not None:
            raise ValueError("Client.generate cannot choose the model: the server does (init_args 'model' in "
                             "serving_config.json, or SD_CHINESE_MODEL where the server runs)")
        folder = check_output_dir(output_dir)
        request = {"text": text, "style": style, "negative_text": negative_text, "width": width, "height": height,
                   "steps": steps, "guidance": guidance, "seed": seed, "num_images": num_images,
                   "scheduler": scheduler, "guidance_rescale": guidance_rescale, "strength": strength,
                   "image": _png_base64("image", image, "RGB"), "mask": _png_base64("mask", mask, "L")}
        results = self._post({key: value for key, value in request.items() if value is not None})
        images = [image_from_base64(data) for data in results["images"]]
        if folder is not None:
            save_images(images, [params_of(image) for image in images], folder)
        return images

    def styles(self) -> dict[str, dict[str, str]]:
        """The server's styles: ``{name: {"prompt": fragment, "negative": fragment}}``."""
        return {entry["name"]: {"prompt": entry["prompt"], "negative": entry["negative"]}
                for entry in self._post({"list": "styles"})["styles"]}

    def schedulers(self) -> list[str]:
        return self._post({"list": "schedulers"})["schedulers"]

    def limits(self) -> dict[str, int]:
        return self._post({"list": "limits"})["limits"]

    def _post(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            raise ServingError(f"the server at {self.url} failed: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"cannot reach {self.url} ({reason}); is `hub serving start -m {MODULE}` "
                                  "running there?") from None
        except json.JSONDecodeError:
            raise ServingError(f"the server at {self.url} did not answer with JSON") from None
        if not isinstance(reply, dict) or reply.get("status") != "000":
            status = reply.get("status") if isinstance(reply, dict) else None
            message = reply.get("msg") if isinstance(reply, dict) else reply
            raise ServingError(f"{message} (server status {status})")
        return reply["results"]

