"""VAE tiling: decode (or encode) a large image in overlapping tiles and blend them, as diffusers does.

Memory of a VAE decode grows with the image area (SD's decoder runs 128 channels at full resolution,
0.5 GB per activation at 1024x1024, and its mid-block attention over 128x128 latents has a 16384^2 score
matrix, 1 GB), so large images are decoded tile by tile. The layout and the blending are diffusers'
``AutoencoderKL.tiled_decode`` / ``_tiled_encode`` (``models/autoencoders/autoencoder_kl.py``), so a tiled image
equals diffusers' tiled image (``tests/test_runtime.py``): tiles of ``sample_size`` pixels (512 for SD 1.x) start
every (1 - overlap) of a tile from the top left, the last ones cut short by the border; each tile is blended
with its upper and left neighbours (already blended) by a linear ramp over ``overlap`` of a tile, then cropped
to the stride, and the crops are put side by side.

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
        """The tile must be whole latents, and diffusers' layout must join up: the part kept of each decoded
        tile is as wide as the stride between tiles (otherwise diffusers' own result has the wrong size)."""
        if self.tile % factor:
            raise ValueError(f"tile={self.tile} must be a multiple of the VAE's downscale factor {factor}")
        stride, _, keep = _layout(self.tile // factor, self.tile, self.overlap)
        encode_stride, _, encode_keep = _layout(self.tile, self.tile // factor, self.overlap)
        if stride < 1 or stride * factor != keep or encode_stride != encode_keep * factor:
            raise ValueError(f"tile={self.tile} with overlap={self.overlap} does not tile evenly with downscale "
                             f"factor {factor}: the overlap must be whole latents (with overlap 0.25, a tile that "
                             f"is a multiple of {4 * factor} px)")


def _layout(in_tile: int, out_tile: int, overlap: float) -> tuple[int, int, int]:
    """diffusers' numbers: the input stride, the blended extent and the kept part of each output tile."""
    stride = int(in_tile * (1 - overlap))
    blend = int(out_tile * overlap)
    return stride, blend, out_tile - blend


def _blend(before: np.ndarray, tile: np.ndarray, extent: int, axis: int) -> None:
    """diffusers' ``blend_v`` (axis 2) / ``blend_h`` (axis 3), in place: the first ``extent`` rows (columns) of
    ``tile`` fade in from the last ``extent`` of its neighbour ``before``."""
    extent = min(before.shape[axis], tile.shape[axis], extent)
    if extent == 0:
        return
    ramp = (np.arange(extent) / extent).astype(np.float32).reshape(-1, 1, 1, 1)
    ours, theirs = np.moveaxis(tile, axis, 0), np.moveaxis(before, axis, 0)   # views: writing ``ours`` writes tile
    ours[:extent] = theirs[-extent:] * (1 - ramp) + ours[:extent] * ramp


def _numpy(value) -> np.ndarray:
    return np.array(value.numpy() if isinstance(value, paddle.Tensor) else value, np.float32)


def _run_tiles(fn: Callable, x: paddle.Tensor, in_tile: int, out_tile: int, overlap: float) -> paddle.Tensor:
    """Apply ``fn`` to ``in_tile`` tiles of ``x`` (outputs ``out_tile`` wide for a full tile), blend, crop, join."""
    stride, extent, keep = _layout(in_tile, out_tile, overlap)
    h, w = x.shape[2:]
    rows = [[_numpy(fn(x[:, :, top:top + in_tile, left:left + in_tile])) for left in range(0, w, stride)]
            for top in range(0, h, stride)]
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if i > 0:
                _blend(rows[i - 1][j], tile, extent, axis=2)
            if j > 0:
                _blend(row[j - 1], tile, extent, axis=3)
    return paddle.to_tensor(np.concatenate([np.concatenate([t[:, :, :keep, :keep] for t in row], axis=3)
                                            for row in rows], axis=2))


def tiled_decode(decode: Callable, latents: paddle.Tensor, factor: int, tiling: VAETiling) -> paddle.Tensor:
    """Images [B, C', h*factor, w*factor] from latents [B, C, h, w], one tile at a time.

    ``decode`` maps latent tiles to image tiles (post-quant conv + decoder)."""
    tiling.check_factor(factor)
    return _run_tiles(decode, latents, tiling.tile // factor, tiling.tile, tiling.overlap)


def tiled_encode(encode: Callable, images: paddle.Tensor, factor: int, tiling: VAETiling) -> paddle.Tensor:
    """Posterior moments [B, 2*latent, H/factor, W/factor] of images [B, C, H, W], one tile at a time.

    ``encode`` maps image tiles to moment tiles (encoder + quant conv); mean and log-variance are blended
    alike, as in diffusers' tiled encode."""
    tiling.check_factor(factor)
    return _run_tiles(encode, images, tiling.tile, tiling.tile // factor, tiling.overlap)
