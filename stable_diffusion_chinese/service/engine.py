"""``TextToImage``: the work behind the PaddleHub Module and the SDK.

check the arguments -> choose the model -> (convert once) -> cached pipeline -> apply the style ->
generate -> attach parameters -> write PNGs. Nothing is computed before every argument has been checked,
and files are written only after all images exist.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from ..pipelines.metadata import GenerationParams
from .arguments import Limits, Request, check_request, check_size
from .logs import setup_logging
from .models import ModelChoice, choose_model, fingerprint, paddle_folder
from .outputs import attach_params, save_images
from .paddle_mode import dynamic_mode
from .settings import Settings
from .styles import get_style

log = logging.getLogger(__name__)

MAX_CACHED_PIPELINES = 2  # a full-size SD pipeline is ~4 GB in float32; keep the two most recent


@dataclasses.dataclass
class Generation:
    images: list[Image.Image]
    params: list[GenerationParams]
    paths: list[Path]
    model: str


class TextToImage:
    """Generates images; ``model`` (else the environment, config file, embedded default) picks the weights."""

    def __init__(self, model: str | os.PathLike | None = None, limits: Limits | None = None,
                 settings: Settings | None = None):
        setup_logging()
        self.model = model
        self.limits = limits or Limits()
        self.settings = settings or Settings.from_environ()

    def generate(self, text: Any, style: Any = None, negative_text: Any = None, width: Any = None,
                 height: Any = None, steps: Any = None, guidance: Any = None, seed: Any = None, num_images: Any = 1,
                 scheduler: Any = None, output_dir: Any = None, model: Any = None, guidance_rescale: Any = 0.0,
                 image: Any = None, mask: Any = None, strength: Any = None, *, progress: bool = True) -> Generation:
        """Text to image; with ``image``, image to image (``strength`` of it repainted); with ``image`` and
        ``mask``, inpainting (the mask's white part repainted)."""
        request = check_request(text, style, negative_text, width, height, steps, guidance, seed, num_images,
                                scheduler, output_dir, guidance_rescale, image, mask, strength, limits=self.limits)
        with dynamic_mode():
            pipeline, choice = self.pipeline(model)
            output = self._run(pipeline, request, progress)
        name = _model_name(choice)
        params = [dataclasses.replace(p, style=request.style, model=name) for p in output.params]
        images = [attach_params(image, p) for image, p in zip(output.images, params)]
        paths = save_images(images, params, request.output_dir) if request.output_dir else []
        return Generation(images, params, paths, name)

    def pipeline(self, model: Any = None):
        """The loaded pipeline for ``model`` (or this instance's choice), and how it was chosen."""
        choice = choose_model(model if model is not None else self.model, self.settings)
        folder = paddle_folder(choice, self.settings)
        _note_embedded(choice)
        with dynamic_mode():
            return _cached_pipeline(folder), choice

    def _run(self, pipeline, request: Request, progress: bool):
        width, height = _size(pipeline, request)
        check_size(width, height, pipeline.vae_scale_factor, self.limits)
        prompts, negatives = request.texts, request.negatives
        if request.style is not None:
            style, language = get_style(request.style), _language(pipeline)
            pairs = [style.apply(p, n, language) for p, n in zip(prompts, negatives)]
            prompts, negatives = [p for p, _ in pairs], [n for _, n in pairs]
        common = dict(negative_prompt=negatives, width=width, height=height, num_inference_steps=request.steps,
                      guidance_scale=request.guidance, num_images_per_prompt=request.num_images, seed=request.seed,
                      scheduler=request.scheduler, guidance_rescale=request.guidance_rescale, progress=progress)
        if request.task == "img2img":
            return pipeline.img2img(prompts, request.image, strength=request.strength, **common)
        if request.task == "inpaint":
            return pipeline.inpaint(prompts, request.image, request.mask, strength=request.strength, **common)
        return pipeline(prompts, **common)


def _model_name(choice: ModelChoice) -> str:
    """What PNGs record as the model: the source's name, not its converted copy's."""
    return "embedded" if choice.is_embedded else (choice.path.stem if choice.path.is_file() else choice.path.name)


def _size(pipeline, request: Request) -> tuple[int, int]:
    native = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    return request.width or native, request.height or native


def _language(pipeline) -> str:
    """CLIP reads English only; our other text encoders (Chinese BERT, XLM-R) read Chinese."""
    from ..tokenizers import CLIPTokenizer

    return "en" if isinstance(pipeline.tokenizer, CLIPTokenizer) else "zh"


# ------------------------------------------------------------------------- per-process state

_pipelines: "collections.OrderedDict[tuple[str, str], Any]" = collections.OrderedDict()
_pipelines_lock = threading.Lock()
_embedded_noted = False


def _cached_pipeline(folder: Path):
    """One pipeline per model folder (reloaded if its files changed), the most recent few kept."""
    from ..pipelines.stable_diffusion import StableDiffusionPipeline

    key = (str(folder), fingerprint(folder))
    with _pipelines_lock:
        if key in _pipelines:
            _pipelines.move_to_end(key)
            return _pipelines[key]
        for old in [k for k in _pipelines if k[0] == key[0]]:
            del _pipelines[old]
        pipeline = StableDiffusionPipeline.from_pretrained(folder)
        _pipelines[key] = pipeline
        while len(_pipelines) > MAX_CACHED_PIPELINES:
            _pipelines.popitem(last=False)
        return pipeline


def _note_embedded(choice: ModelChoice) -> None:
    global _embedded_noted
    if choice.is_embedded and not _embedded_noted:
        _embedded_noted = True
        log.info("using the embedded default model (%s); choose another with model=..., SD_CHINESE_MODEL or "
                 "'model' in config.json", choice.path)
