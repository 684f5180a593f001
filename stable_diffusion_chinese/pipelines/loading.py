"""Build a pipeline's components from a diffusers folder or a Paddle folder written by ``convert``.

``model_index.json`` names each component's reference class; ``weights.convert.network_class`` maps
the networks to ours (one table for converting and loading).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..json_files import read_json_object
from ..schedulers import make_scheduler, read_scheduler_config
from ..tokenizers import load_tokenizer
from ..weights.convert import network_class
from .defaults import GenerationDefaults

NETWORKS = ("unet", "vae", "text_encoder")


def load_components(folder, scheduler: str | None = None) -> dict[str, Any]:
    root = Path(folder)
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"{root} is not a Stable Diffusion model folder: it has no model_index.json")
    index = read_json_object(index_file)
    parts: dict[str, Any] = {}
    for name in NETWORKS + ("tokenizer", "scheduler"):
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            raise ValueError(f"model_index.json in {root} has no {name!r} component")
        if not (root / name).is_dir():
            raise FileNotFoundError(f"model_index.json names a {name!r} component but {root / name} is missing")
    for name in NETWORKS:
        parts[name] = network_class(index[name][1]).from_pretrained(root / name)
    parts["tokenizer"] = load_tokenizer(root / "tokenizer")
    base = read_scheduler_config(root / "scheduler")
    parts["scheduler"] = make_scheduler(scheduler or base.get("_class_name"), base_config=base)
    parts["scheduler_config"] = base
    parts["model_name"] = root.name
    parts["generation_defaults"] = GenerationDefaults.from_model_index(index, str(index_file))
    return parts
