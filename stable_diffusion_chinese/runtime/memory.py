"""Memory options for large images: attention slicing (eager networks) and VAE tiling (both runtimes).

Defaults: a slicing budget of 2**27 score elements (512 MB of fp32 scores per chunk) and tiles of the
VAE's ``sample_size`` (512 px for SD 1.x), overlapping by a quarter, as diffusers' ``enable_tiling``.
"""
from __future__ import annotations

from typing import Any

from ..models.transformer import Attention
from ..models.vae_tiling import DEFAULT_OVERLAP, VAETiling

DEFAULT_MAX_SCORES = 2 ** 27


def _networks(target: Any, names: tuple[str, ...]) -> list:
    """``target`` itself, or the named networks of a pipeline."""
    if all(hasattr(target, name) for name in names):
        return [getattr(target, name) for name in names]
    return [target]


def enable_attention_slicing(target: Any, max_scores: int | None = DEFAULT_MAX_SCORES) -> int:
    """Slice every UNet/VAE attention of ``target`` (a pipeline or a network) to ``max_scores`` score
    elements per chunk; ``None`` switches slicing off. Returns how many attention layers were set."""
    if max_scores is not None and (not isinstance(max_scores, int) or isinstance(max_scores, bool) or max_scores < 1):
        raise ValueError(f"max_scores must be a positive integer or None, got {max_scores!r}")
    count = 0
    for network in _networks(target, ("unet", "vae")):
        if not hasattr(network, "sublayers"):
            raise TypeError(f"attention slicing applies to eager networks, not {type(network).__name__}; exported "
                            "graphs use the fused attention kernel, which never holds the score matrix")
        for layer in network.sublayers():
            if isinstance(layer, Attention):
                layer.max_scores = max_scores
                count += 1
    return count


def disable_attention_slicing(target: Any) -> int:
    return enable_attention_slicing(target, None)


def enable_vae_tiling(target: Any, tile: int | None = None, overlap: float = DEFAULT_OVERLAP) -> VAETiling:
    """Decode/encode images larger than ``tile`` pixels (default: the VAE's ``sample_size``) in tiles."""
    vae = _networks(target, ("vae",))[0]
    if not hasattr(vae, "tiling"):
        raise TypeError(f"{type(vae).__name__} does not support tiling")
    vae.tiling = VAETiling(tile=int(tile or vae.config.sample_size), overlap=overlap)
    return vae.tiling


def disable_vae_tiling(target: Any) -> None:
    _networks(target, ("vae",))[0].tiling = None
