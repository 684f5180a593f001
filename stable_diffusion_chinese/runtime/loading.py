"""Choose the runtime: eager Paddle layers, or exported graphs behind Paddle Inference predictors.

``load_pipeline(folder, runtime="inference", threads=2)`` is the one switch; ``use_inference_runtime``
swaps an already loaded pipeline's networks for predictor-backed ones. Either way the pipeline object
is the same class with the same call signatures: it never asks which runtime it holds.
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from ..schedulers import make_scheduler, read_scheduler_config
from .components import InferenceTextEncoder, InferenceUNet, InferenceVAE
from .export import EXPORT_INDEX, export_model, network_class, read_export_index
from .predictor import GraphPredictor, RuntimeOptions

RUNTIMES = ("eager", "inference")


def load_exported(folder, options: RuntimeOptions | None = None, graphs=None) -> dict[str, Any]:
    """Predictor-backed ``unet``, ``vae`` and ``text_encoder`` from an export folder (absent graphs: None).

    ``graphs`` limits which exported graphs get a predictor (default: all), e.g. ``("unet",)``.
    """
    root = Path(folder)
    index = read_export_index(root)
    options = options or RuntimeOptions()
    wanted = set(index["graphs"]) if graphs is None else set(graphs)
    unknown = wanted - set(index["graphs"])
    if unknown:
        raise ValueError(f"the export in {root} has no {', '.join(sorted(unknown))} graph")
    graphs = {name: info for name, info in index["graphs"].items() if name in wanted}

    def predictor(name: str) -> GraphPredictor | None:
        return GraphPredictor(root / name, graphs[name], options) if name in graphs else None

    def config_and_class(name: str):
        cls = network_class(graphs[name]["class"])
        return cls.config_class.from_json(root / name / "config.json"), cls

    parts: dict[str, Any] = {"unet": None, "vae": None, "text_encoder": None}
    if "unet" in graphs:
        parts["unet"] = InferenceUNet(predictor("unet"), *config_and_class("unet"))
    vae_graph = "vae_decoder" if "vae_decoder" in graphs else "vae_encoder" if "vae_encoder" in graphs else None
    if vae_graph:
        parts["vae"] = InferenceVAE(predictor("vae_decoder"), predictor("vae_encoder"), *config_and_class(vae_graph))
    if "text_encoder" in graphs:
        parts["text_encoder"] = InferenceTextEncoder(predictor("text_encoder"), *config_and_class("text_encoder"))
    return parts


def use_inference_runtime(pipeline, folder, options: RuntimeOptions | None = None):
    """A pipeline like ``pipeline`` (same tokenizer, scheduler, name) whose networks run on the export in ``folder``."""
    parts = load_exported(folder, options)
    missing = [name for name, part in parts.items() if part is None]
    if missing:
        raise ValueError(f"the export in {folder} lacks {', '.join(missing)}; a pipeline needs all three networks")
    return type(pipeline)(parts["unet"], parts["vae"], parts["text_encoder"], pipeline.tokenizer, pipeline.scheduler,
                          model_name=pipeline.model_name, scheduler_config=pipeline.scheduler_config)


def load_pipeline(folder, runtime: str = "eager", *, scheduler: str | None = None, threads: int | None = None,
                  export_dir=None, onednn: bool = True):
    """A ``StableDiffusionPipeline`` on the chosen runtime.

    ``runtime="eager"``: ``folder`` is a model folder (diffusers or converted). ``runtime="inference"``:
    ``folder`` is an export folder written by ``export`` (with its tokenizer and scheduler), or a model
    folder together with ``export_dir``, which is exported first if it holds no export yet.
    """
    from ..pipelines.stable_diffusion import StableDiffusionPipeline

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "eager":
        return StableDiffusionPipeline.from_pretrained(folder, scheduler=scheduler)
    options = RuntimeOptions(threads=threads, onednn=onednn)
    exported = _export_folder(Path(folder), export_dir)
    return _inference_pipeline(exported, scheduler, options)


def _export_folder(folder: Path, export_dir) -> Path:
    if (folder / EXPORT_INDEX).is_file():
        return folder
    if export_dir is None:
        raise ValueError(f"{folder} holds no export ({EXPORT_INDEX}); export it first "
                         "(`python -m stable_diffusion_chinese export MODEL OUT`) or pass export_dir")
    target = Path(export_dir)
    if not (target / EXPORT_INDEX).is_file():
        export_folder(folder, target)
    return target


def export_folder(model_folder, out_dir, **options) -> Path:
    """Load a model folder eagerly, export it with its tokenizer and scheduler, and free the eager copy."""
    from ..pipelines.stable_diffusion import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(model_folder)
    try:
        return export_model(pipeline, out_dir, tokenizer_folder=Path(model_folder) / "tokenizer", **options)
    finally:
        del pipeline
        gc.collect()


def _inference_pipeline(folder: Path, scheduler: str | None, options: RuntimeOptions):
    from ..pipelines.defaults import GenerationDefaults
    from ..pipelines.stable_diffusion import StableDiffusionPipeline
    from ..tokenizers import load_tokenizer

    for part in ("tokenizer", "scheduler"):
        if not (folder / part).is_dir():
            raise FileNotFoundError(f"export folder {folder} has no {part}/ (exports written by the CLI include it)")
    parts = load_exported(folder, options)
    base = read_scheduler_config(folder / "scheduler")
    index = read_export_index(folder)
    return StableDiffusionPipeline(parts["unet"], parts["vae"], parts["text_encoder"], load_tokenizer(folder / "tokenizer"),
                                   make_scheduler(scheduler or base.get("_class_name"), base_config=base),
                                   model_name=index.get("model_name") or folder.name, scheduler_config=base,
                                   generation_defaults=GenerationDefaults.from_model_index(index, str(folder)))
