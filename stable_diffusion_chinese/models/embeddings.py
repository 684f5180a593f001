"""Sinusoidal timestep features and the MLP that embeds them."""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn


def timestep_features(timesteps: paddle.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                      max_period: float = 10000.0) -> paddle.Tensor:
    """Transformer positional encoding of the timesteps (Vaswani et al. 2017, sec. 3.5), as SD uses it.

    Frequencies ``exp(-ln(max_period) * i / (half - freq_shift))``; SD 1.x/2.x use ``freq_shift=0`` and
    cos before sin (``flip_sin_to_cos``), the order of the original LDM code.
    """
    half = dim // 2
    exponent = -math.log(max_period) * paddle.arange(half, dtype="float32") / (half - freq_shift)
    args = timesteps.astype("float32")[:, None] * paddle.exp(exponent)[None, :]
    sin, cos = paddle.sin(args), paddle.cos(args)
    features = paddle.concat([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        features = F.pad(features, [0, 1])
    return features


class TimestepEmbedding(nn.Layer):
    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, features: paddle.Tensor) -> paddle.Tensor:
        return self.linear_2(F.silu(self.linear_1(features)))
