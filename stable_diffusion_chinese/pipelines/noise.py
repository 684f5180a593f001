"""Per-image random streams, so image i of a batch depends on its own seed only.

A pipeline draws every random number (initial latents, VAE posterior samples, ancestral-sampler noise)
image by image from that image's generator, in the order diffusers draws with a list of torch
generators. Any object with ``standard_normal(shape) -> np.ndarray`` works as a generator, which is how
the parity tests replay torch's random numbers through our pipeline.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import paddle

MAX_SEED = 2 ** 32 - 1


class NormalSource(Protocol):
    def standard_normal(self, size: Sequence[int]) -> np.ndarray: ...


def seeds_for(seed: int | Sequence[int] | None, count: int) -> list[int]:
    """``count`` seeds: a list is taken as is, an int gives seed, seed+1, ... (as A1111 does), None draws one."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(seed, (list, tuple)):
        if len(seed) != count:
            raise ValueError(f"got {len(seed)} seeds for {count} images")
        seeds = [int(s) for s in seed]
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seeds = [int(seed) + i for i in range(count)]
    else:
        raise TypeError(f"seed must be an int or a list of ints, got {type(seed).__name__}")
    for s in seeds:
        if not 0 <= s <= MAX_SEED:
            raise ValueError(f"seed {s} is outside 0..{MAX_SEED}")
    return seeds


def generators_for(seeds: Sequence[int]) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in seeds]


def batch_noise(generators: Sequence[NormalSource], shape: Sequence[int]) -> paddle.Tensor:
    """One ``shape`` draw per generator, stacked into ``[len(generators), *shape]`` float32."""
    draws = [np.asarray(g.standard_normal(tuple(shape)), dtype=np.float32) for g in generators]
    return paddle.to_tensor(np.stack(draws))


def as_generators(generator: Any, count: int) -> list[NormalSource]:
    """Accept one generator (used for every image, in turn) or one per image."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images")
        return list(generator)
    return [generator] * count
