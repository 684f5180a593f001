"""The activations a transformers ``hidden_act`` string names, as Paddle functions.

Formulas from transformers' ``activations.py`` (``ACT2CLS``): "gelu" is the exact erf form (BERT,
XLM-R), "quick_gelu" is ``x * sigmoid(1.702 x)`` (CLIP), and the "*_tanh"/"gelu_new" family is the
tanh approximation. Mixing up exact and tanh gelu shifts outputs by ~1e-3, so each name maps to
exactly one formula and unknown names are refused.
"""
from __future__ import annotations

from typing import Callable

import paddle
import paddle.nn.functional as F

from ..config import UnsupportedConfigError


def _quick_gelu(x: paddle.Tensor) -> paddle.Tensor:
    return x * F.sigmoid(1.702 * x)


def _exact_gelu(x: paddle.Tensor) -> paddle.Tensor:
    return F.gelu(x, approximate=False)


def _tanh_gelu(x: paddle.Tensor) -> paddle.Tensor:
    return F.gelu(x, approximate=True)


ACTIVATIONS: dict[str, Callable[[paddle.Tensor], paddle.Tensor]] = {
    "gelu": _exact_gelu,
    "gelu_python": _exact_gelu,
    "gelu_new": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "gelu_python_tanh": _tanh_gelu,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str) -> Callable[[paddle.Tensor], paddle.Tensor]:
    """The function for a config's ``hidden_act``; unknown names raise ``UnsupportedConfigError``."""
    if name not in ACTIVATIONS:
        raise UnsupportedConfigError(
            f"config option hidden_act={name!r} is not supported (supported: {sorted(ACTIVATIONS)})")
    return ACTIVATIONS[name]
