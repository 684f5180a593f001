"""Training checkpoints: model, optimizer, EMA, RNG states and step, written atomically.

Files are ``<dir>/ckpt-<step:08d>.pdckpt`` (one ``paddle.save`` pickle); the newest ``keep`` stay.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import paddle

PATTERN = re.compile(r"ckpt-(\d{8})\.pdckpt$")


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"ckpt-{step:08d}.pdckpt"


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if PATTERN.search(p.name))
    return found[-1] if found else None


def save_checkpoint(folder: str | os.PathLike, step: int, layers: dict, optimizer, ema, extra: dict | None = None,
                    keep: int = 2) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": int(step),
        "models": {name: layer.state_dict() for name, layer in layers.items()},
        "optimizer": portable_optimizer_state(optimizer.state_dict(), layers),
        "ema": ema.state_dict() if ema is not None else None,
        "numpy_rng": np.random.get_state(),
        "paddle_rng": paddle.get_rng_state(),
        "extra": extra or {},
    }
    path = checkpoint_path(folder, step)
    tmp = path.with_suffix(".tmp")
    paddle.save(state, str(tmp))
    os.replace(tmp, path)   # a crash mid-write never leaves a truncated checkpoint behind
    for old in sorted(p for p in folder.iterdir() if PATTERN.search(p.name))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, layers: dict, optimizer, ema) -> dict:
    """Restore everything saved by ``save_checkpoint``; returns the state (``step``, ``extra``)."""
    state = paddle.load(str(path))
    for name, layer in layers.items():
        if name not in state["models"]:
            raise ValueError(f"checkpoint {path} has no {name!r} weights (has {sorted(state['models'])})")
        _check_fits(path, name, state["models"][name], layer)
        layer.set_state_dict(state["models"][name])
    optimizer.set_state_dict(native_optimizer_state(state["optimizer"], layers))
    if ema is not None:
        if state["ema"] is None:
            raise ValueError(f"checkpoint {path} has no EMA state")
        ema.set_state_dict(state["ema"])
    np.random.set_state(state["numpy_rng"])
    paddle.set_rng_state(state["paddle_rng"])
    return state


def _check_fits(path, name: str, saved: dict, layer) -> None:
    """Paddle's ``set_state_dict`` only warns about missing or unexpected keys, so a checkpoint of another
    architecture (a grown UNet resumed without its ``--unet-config``) would load partly and silently."""
    own = layer.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    misshaped = sorted(k for k in set(own) & set(saved) if list(own[k].shape) != list(saved[k].shape))
    if missing or unexpected or misshaped:
        raise ValueError(f"checkpoint {path} holds {name!r} weights of another architecture: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:2]}), {len(misshaped)} of another shape (e.g. {misshaped[:2]}); "
                         "build the layers from the run's own configs (for a grown UNet: --unet-config)")


# Paddle names optimizer accumulators after the parameters' *generated* names ("linear_3.w_0_moment1_0"),
# which depend on how many layers the process built before. Checkpoints store them under the
# parameters' structural names instead ("unet.conv_in.weight::moment1_0"), so any fresh process or
# freshly built model can load them.

def _generated_to_structural(layers: dict) -> dict[str, str]:
    return {p.name: f"{name}.{key}" for name, layer in layers.items() for key, p in layer.named_parameters()}


def portable_optimizer_state(state: dict, layers: dict) -> dict:
    names = _generated_to_structural(layers)
    by_length = sorted(names, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        value = value.numpy() if isinstance(value, paddle.Tensor) else value
        owner = next((n for n in by_length if key.startswith(n + "_")), None)
        out[f"{names[owner]}::{key[len(owner) + 1:]}" if owner else key] = value
    return out


def native_optimizer_state(state: dict, layers: dict) -> dict:
    structural = {v: k for k, v in _generated_to_structural(layers).items()}
    out = {}
    for key, value in state.items():
        if "::" in key:
            name, suffix = key.split("::", 1)
            if name not in structural:
                raise ValueError(f"optimizer state for {name!r}, which the model does not have")
            key = f"{structural[name]}_{suffix}"
        out[key] = value
    return out
