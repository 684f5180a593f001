"""VAE tiling: decode (or encode) a large image in overlapping tiles and blend them.

Memory of a VAE decode grows with the image area (SD's decoder runs 128 channels at full resolution,
0.5 GB per activation at 1024x1024, and its mid-block attention over 128x128 latents has a 16384^2 score
matrix, 1 GB), so large images are decoded tile by tile. The facts follow diffusers' ``AutoencoderKL.enable_tiling``
(``models/autoencoders/autoencoder_kl.py``): tiles of ``sample_size`` pixels (512 for SD 1.x), neighbours
overlapping by a quarter of a tile, linear cross-fades across the overlap. Our layout differs in two
ways: the last tile of a row/column is moved back to end at the image border (so every tile is full size
and sees as much context as the others), and tiles are blended by normalised weights (each output pixel is
the weighted mean of the tiles covering it; the weights ramp linearly across every overlap).

A tiled result is NOT equal to the untiled one, anywhere: each tile is decoded on its own, so its
GroupNorm statistics and its mid-block attention see only that tile, and its convolutions see zero
padding instead of the neighbouring latents at the tile borders. Blending hides the seams; it cannot
make the tiles agree.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import paddle

#: diffusers' ``tile_overlap_factor``
DEFAULT_OVERLAP = 0.25


@dataclasses.dataclass(frozen=True)
class VAETiling:
    """``tile``: tile side in image pixels; ``overlap``: fraction of a tile shared with each neighbour."""

    tile: int = 512
    overlap: float = DEFAULT_OVERLAP

    def __post_init__(self):
        if not isinstance(self.tile, int) or isinstance(self.tile, bool) or self.tile < 16:
            raise ValueError(f"tile must be an integer number of pixels >= 16, got {self.tile!r}")
        if not 0.0 <= self.overlap < 0.5:
            raise ValueError(f"overlap must be a fraction in [0, 0.5), got {self.overlap!r}")

    def needed(self, height: int, width: int) -> bool:
        """Tiling pays off only for images larger than one tile (diffusers' rule)."""
        return height > self.tile or width > self.tile

    def check_factor(self, factor: int) -> None:
        if self.tile % factor:
            raise ValueError(f"tile={self.tile} must be a multiple of the VAE's downscale factor {factor}")


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Starts of tiles of length ``tile`` every ``stride`` covering [0, size); the last one ends at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def blend_weights(starts: list[int], tile: int, size: int) -> list[np.ndarray]:
    """1-D weights of each tile: 1 inside, a linear ramp across each overlap with a neighbour.

    In an overlap of n pixels the incoming tile's weight rises as (i + 0.5) / n and the outgoing tile's
    falls as 1 - (i + 0.5) / n, so the pair sums to 1 and no weight is ever 0 (the normalisation in
    ``_Canvas`` never divides by zero, even where three tiles meet).
    """
    weights = []
    for index, start in enumerate(starts):
        length = min(tile, size - start)
        w = np.ones(length, np.float32)
        if index > 0:
            before = starts[index - 1] + tile - start  # overlap with the previous tile
            if before > 0:
                w[:before] = np.minimum(w[:before], (np.arange(before) + 0.5) / before)
        if index + 1 < len(starts):
            after = start + length - starts[index + 1]  # overlap with the next tile
            if after > 0:
                w[length - after:] = np.minimum(w[length - after:], 1.0 - (np.arange(after) + 0.5) / after)
        weights.append(w)
    return weights


class _Canvas:
    """Weighted sum of tiles and of their weights; ``result`` is their ratio."""

    def __init__(self, shape):
        self.total = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape[2:], np.float32)

    def add(self, tile: np.ndarray, top: int, left: int, wy: np.ndarray, wx: np.ndarray) -> None:
        h, w = tile.shape[2:]
        window = np.outer(wy[:h], wx[:w])
        self.total[:, :, top:top + h, left:left + w] += tile * window
        self.weight[top:top + h, left:left + w] += window

    def result(self) -> paddle.Tensor:
        return paddle.to_tensor(self.total / self.weight)


def _numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value, np.float32)


def _run_tiles(fn: Callable, x: paddle.Tensor, in_tile: int, in_stride: int, scale: float,
               out_channels: int) -> paddle.Tensor:
    """Apply ``fn`` to overlapping ``in_tile`` tiles of ``x``; its output is ``scale`` times larger."""
    b, _, h, w = x.shape
    ys, xs = tile_starts(h, in_tile, in_stride), tile_starts(w, in_tile, in_stride)
    out_tile = int(in_tile * scale)
    out_h, out_w = int(h * scale), int(w * scale)
    wy = blend_weights([int(s * scale) for s in ys], out_tile, out_h)
    wx = blend_weights([int(s * scale) for s in xs], out_tile, out_w)
    canvas = _Canvas((b, out_channels, out_h, out_w))
    for i, top in enumerate(ys):
        for j, left in enumerate(xs):
            out = _numpy(fn(x[:, :, top:top + in_tile, left:left + in_tile]))
            canvas.add(out, int(top * scale), int(left * scale), wy[i], wx[j])
    return canvas.result()


def tiled_decode(decode: Callable, latents: paddle.Tensor, factor: int, tiling: VAETiling,
                 out_channels: int) -> paddle.Tensor:
    """Images [B, out_channels, h*factor, w*factor] from latents [B, C, h, w], one tile at a time.

    ``decode`` maps latent tiles to image tiles (post-quant conv + decoder).
    """
    tiling.check_factor(factor)
    tile = tiling.tile // factor
    stride = max(1, tile - int(round(tile * tiling.overlap)))
    return _run_tiles(decode, latents, tile, stride, float(factor), out_channels)


def tiled_encode(encode: Callable, images: paddle.Tensor, factor: int, tiling: VAETiling,
                 moment_channels: int) -> paddle.Tensor:
    """Posterior moments [B, 2*latent, H/factor, W/factor] of images [B, C, H, W], one tile at a time.

    ``encode`` maps image tiles to moment tiles (encoder + quant conv). Mean and log-variance are blended
    like diffusers' tiled encode does.
    """
    tiling.check_factor(factor)
    overlap = int(round(tiling.tile * tiling.overlap / factor)) * factor  # tile starts stay multiples of factor
    return _run_tiles(encode, images, tiling.tile, tiling.tile - overlap, 1.0 / factor, moment_channels)
