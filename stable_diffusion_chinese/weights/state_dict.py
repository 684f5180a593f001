"""Strict loading of torch-layout numpy state dicts into Paddle layers, and the way back.

Our layers carry diffusers'/transformers' parameter names, so a state dict's keys line up one to one.
The one layout difference is ``nn.Linear``: torch stores ``[out, in]``, Paddle ``[in, out]``. Which
keys to transpose is found by walking the model for ``nn.Linear`` sub-layers (never by guessing from
a tensor's rank, which would also catch embeddings and 1x1 convs stored as 2-D).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import paddle
from paddle import nn


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit a model: lists every missing, unexpected and mis-shaped key."""

    def __init__(self, source: str, missing=(), unexpected=(), mis_shaped=()):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mis_shaped = sorted(mis_shaped)
        lines = [f"weights from {source or 'checkpoint'} do not fit the model:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        for key, want, got in self.mis_shaped:
            lines.append(f"  wrong shape for {key}: model has {list(want)}, checkpoint has {list(got)}")
        super().__init__("\n".join(lines))


def linear_weight_keys(model: nn.Layer) -> set[str]:
    """Names of the ``weight`` parameters that belong to ``nn.Linear`` layers."""
    return {f"{name}.weight" if name else "weight"
            for name, layer in model.named_sublayers(include_self=True)
            if isinstance(layer, nn.Linear)}


def _ignored(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p or (p.endswith("*") and key.startswith(p[:-1])) for p in patterns)


def load_into(model: nn.Layer, state: Mapping[str, np.ndarray], *, source: str = "",
              torch_layout: bool = True) -> None:
    """Copy ``state`` into ``model``; every key must match by name and shape.

    ``torch_layout`` says the arrays come from a torch checkpoint (Linear weights ``[out, in]``);
    ``.pdparams`` files are already in Paddle layout. Keys a model declares in
    ``ignored_checkpoint_keys`` (buffers some exporters save, like CLIP's ``position_ids``) are skipped.
    """
    params = model.state_dict()
    ignored = getattr(model, "ignored_checkpoint_keys", ())
    transpose = linear_weight_keys(model) if torch_layout else set()
    given = {k: v for k, v in state.items() if not _ignored(k, ignored)}
    missing = [k for k in params if k not in given]
    unexpected = [k for k in given if k not in params]
    mis_shaped, arrays = [], {}
    for key, target in params.items():
        if key not in given:
            continue
        array = np.asarray(given[key])
        if key in transpose and array.ndim == 2:
            array = array.T
        want = tuple(target.shape)
        if tuple(array.shape) != want:
            mis_shaped.append((key, want, tuple(array.shape)))
            continue
        arrays[key] = array
    if missing or unexpected or mis_shaped:
        raise WeightsMismatchError(source, missing, unexpected, mis_shaped)
    for key, target in params.items():
        target.set_value(arrays[key].astype(_numpy_dtype(target), copy=False))


def export_from(model: nn.Layer, *, torch_layout: bool = True) -> dict[str, np.ndarray]:
    """The model's parameters as numpy arrays, in torch layout unless asked otherwise."""
    transpose = linear_weight_keys(model) if torch_layout else set()
    out = {}
    for key, value in model.state_dict().items():
        array = value.numpy()
        out[key] = np.ascontiguousarray(array.T) if key in transpose else array
    return out


def _numpy_dtype(tensor: paddle.Tensor) -> np.dtype:
    return {paddle.float32: np.float32, paddle.float16: np.float16,
            paddle.float64: np.float64, paddle.int64: np.int64}.get(tensor.dtype, np.float32)
