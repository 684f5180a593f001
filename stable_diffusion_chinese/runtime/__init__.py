"""Deployment runtime: static export, Paddle Inference predictors, memory options.

* ``export_model(pipeline, out_dir)`` - the text encoder, UNet, VAE decoder and encoder as static programs.
* ``load_pipeline(folder, runtime="inference", threads=2)`` / ``use_inference_runtime(pipeline, export_dir)`` -
  the same pipeline class on ``paddle.inference`` predictors (oneDNN, IR optimisation, thread count).
* ``enable_attention_slicing`` / ``enable_vae_tiling`` - bounded memory for large images.

Names are imported on first use (PEP 562), so the CLI can register ``export`` without importing Paddle.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "export_model": "export", "read_export_index": "export",
    "export_folder": "loading", "load_exported": "loading", "load_pipeline": "loading",
    "use_inference_runtime": "loading", "RUNTIMES": "loading",
    "RuntimeOptions": "predictor", "GraphPredictor": "predictor",
    "InferenceUNet": "components", "InferenceVAE": "components", "InferenceTextEncoder": "components",
    "enable_attention_slicing": "memory", "disable_attention_slicing": "memory",
    "enable_vae_tiling": "memory", "disable_vae_tiling": "memory",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
