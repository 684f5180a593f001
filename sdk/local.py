"""Generate on this machine, no PaddleHub involved: ``sdc_sdk.generate("江上烟雨", style="水墨")``."""
from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image

from stable_diffusion_chinese.service import TextToImage, describe_styles, scheduler_names

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def generate(text: str | list[str], style: str | None = None, negative_text: str | list[str] | None = None,
             width: int | None = None, height: int | None = None, steps: int | None = None,
             guidance: float | None = None, seed: int | None = None, num_images: int = 1,
             scheduler: str | None = None, output_dir: str | os.PathLike | None = None,
             model: str | os.PathLike | None = None, guidance_rescale: float = 0.0,
             image: ImageInput | None = None, mask: ImageInput | None = None,
             strength: float | None = None) -> list[Image.Image]:
    """Images for ``text`` (one string or a list; Chinese, English or mixed).

    ``style``: one of ``styles()``; ``width``/``height``: multiples of 8 (default: the model's size);
    ``steps``/``guidance``: default the model's recommendation (usually 20 and 7.5; the embedded model's
    guidance is 3); ``seed``: 0..2**32-1, 0 included (None draws one); ``scheduler``: one of ``schedulers()``;
    ``output_dir``: also write PNGs carrying their parameters; ``model``: a folder, checkpoint, downloaded
    model name or "embedded" (default: SD_CHINESE_MODEL, then config.json, then the embedded model);
    ``guidance_rescale``: 0..1 (0 = off, 0.7 in Lin et al. 2023) against over-exposure at high guidance;
    ``image`` (a path, PIL image or HxWxC uint8 array): image-to-image, repainting ``strength`` of it (0-1,
    default 0.8); ``mask`` as well: inpainting, the mask's white part repainted (default strength 1).
    Each image's ``info["parameters"]`` / ``info["sd_chinese_params"]`` say how it was made (seed included),
    and ``info["path"]`` where it was written.
    """
    return TextToImage().generate(text, style, negative_text, width, height, steps, guidance, seed, num_images,
                                  scheduler, output_dir, model, guidance_rescale, image, mask, strength).images


def styles() -> dict[str, dict[str, str]]:
    """``{name: {"prompt": fragment, "negative": fragment}}``, in the table's order."""
    return describe_styles()


def schedulers() -> list[str]:
    return list(scheduler_names())


def convert(source: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Convert a diffusers folder or a single-file checkpoint into a Paddle folder; one summary per step."""
    from stable_diffusion_chinese.weights.convert import convert as convert_model

    return convert_model(source, output, overwrite=overwrite)


def download(url: str | None = None, sha256: str | None = None, name: str | None = None, overwrite: bool = False,
             use: bool = False) -> str:
    """Fetch, verify and install a model archive; ``use=True`` also makes it the default model.
    Returns the installed folder."""
    from stable_diffusion_chinese.service.download import download_model
    from stable_diffusion_chinese.service.settings import Settings, update_config

    settings = Settings.from_environ()
    folder = download_model(url, sha256, name=name, settings=settings, overwrite=overwrite)
    if use:
        update_config(settings.config_file, model=folder.name)
    return str(folder)


def install_hub_module(hub_home: str | os.PathLike | None = None, force: bool = False) -> str:
    """Make ``hub.Module(name="stable_diffusion_chinese")`` find this installed package; returns the link."""
    from pathlib import Path

    from stable_diffusion_chinese.service.hub_home import install_hub_module as install

    return str(install(Path(hub_home) if hub_home else None, force=force))


__all__ = ["generate", "styles", "schedulers", "convert", "download", "install_hub_module"]
