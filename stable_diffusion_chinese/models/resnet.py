"""ResNet blocks and the 2x resamplers shared by the UNet and the VAE (diffusers' names)."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class ResnetBlock2D(nn.Layer):
    """GroupNorm-SiLU-conv twice, with an optional time embedding added between (DDPM, Ho et al. 2020)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int | None, groups: int, eps: float,
                 output_scale_factor: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, epsilon=eps)
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = nn.GroupNorm(groups, out_channels, epsilon=eps)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2D(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x: paddle.Tensor, temb: paddle.Tensor | None = None) -> paddle.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = shortcut + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Downsample2D(nn.Layer):
    """A stride-2 3x3 conv. ``padding=0`` is the VAE's variant, padded by one on the right and bottom only."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2D(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.padding == 0:
            x = F.pad(x, [0, 1, 0, 1])
        return self.conv(x)


class Upsample2D(nn.Layer):
    """Nearest-neighbour 2x (or to ``size``, the matching skip connection's) then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2D(channels, channels, 3, padding=1)

    def forward(self, x: paddle.Tensor, size: tuple[int, int] | None = None) -> paddle.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=list(size), mode="nearest")
        return self.conv(x)
