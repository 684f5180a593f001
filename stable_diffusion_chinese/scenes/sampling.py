"""Random scenes for training and evaluation, with combinations held out of training.

Held-out combinations (never sampled for training, the only ones in the evaluation prompt set):
- single: (shape, colour, cell) with (shape + 2*colour + 3*cell) % 11 == 0          (~1/11 of them)
- count:  (shape, colour, count) with (shape + 2*colour + 3*count) % 11 == 5
- pair:   (shape1, colour1, cell1, shape2, colour2, cell2) with
          (s1 + 2*c1 + 3*p1 + 5*s2 + 7*c2 + 11*p2) % 13 == 0
(indices into world.SHAPES / world.COLOURS, cells 0..8). Every single attribute value still occurs
in training; only these particular combinations are new at evaluation time.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .world import (COLOURS, GRID, MIN_BACKGROUND_CONTRAST, PALETTE, SHAPES, STYLES, Scene, SceneObject,
                    colour_distance)

KIND_WEIGHTS = {"single": 0.45, "count": 0.25, "pair": 0.30}
NO_STYLE_WEIGHT = 0.4            # the rest is shared evenly by the five styles
STYLE_WEIGHTS = {None: NO_STYLE_WEIGHT,
                 **{s: (1 - NO_STYLE_WEIGHT) / (len(STYLES) - 1) for s in STYLES if s is not None}}
BACKGROUND_PROBABILITY = 0.2     # chance that a (non-ink) scene names a background colour


def held_out(scene: Scene) -> bool:
    """Whether this scene's combination is reserved for evaluation."""
    idx = [(SHAPES.index(o.shape), COLOURS.index(o.colour), o.cell) for o in scene.objects]
    if scene.kind == "single":
        s, c, p = idx[0]
        return (s + 2 * c + 3 * p) % 11 == 0
    if scene.kind == "count":
        s, c, _ = idx[0]
        return (s + 2 * c + 3 * len(idx)) % 11 == 5
    (s1, c1, p1), (s2, c2, p2) = idx
    return (s1 + 2 * c1 + 3 * p1 + 5 * s2 + 7 * c2 + 11 * p2) % 13 == 0


def sample_scene(rng: np.random.Generator, split: str = "train", kind: str | None = None,
                 background_probability: float = BACKGROUND_PROBABILITY,
                 kind_weights: dict[str, float] = KIND_WEIGHTS,
                 style_weights: dict[str | None, float] | None = None) -> Scene:
    """A random scene; ``split="train"`` never returns a held-out combination, ``"eval"`` only those.
    ``background_probability``: chance that a non-ink scene names a background colour; ``kind_weights``:
    how often each kind is drawn when ``kind`` is None (summing to 1, see ``normalised_kind_weights``);
    ``style_weights``: how often each of STYLES is drawn (summing to 1; None = STYLE_WEIGHTS, drawn as
    they always were, so earlier runs' batches stay the same)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if kind_weights is not KIND_WEIGHTS:
        _check_kind_weights(kind_weights)
        if abs(sum(kind_weights.values()) - 1.0) > 1e-9:
            raise ValueError(f"kind_weights must sum to 1 (normalised_kind_weights makes them so), got {kind_weights}")
    if style_weights is not None and (set(style_weights) - set(STYLES) or abs(sum(style_weights.values()) - 1) > 1e-9
                                      or any(not w >= 0 for w in style_weights.values())):
        raise ValueError(f"style_weights must be >= 0 for styles of {STYLES} and sum to 1, got {style_weights}")
    for _ in range(1000):
        scene = _random_scene(rng, kind, background_probability, kind_weights, style_weights)
        if held_out(scene) == (split == "eval"):
            return scene
    raise RuntimeError("could not draw a scene for this split")  # pragma: no cover - probability ~0


def twin(scene: Scene) -> Scene | None:
    """The scene whose captions hold the same words bound the other way round, or None if it has none:
    a pair with its two objects' cells exchanged ("left red circle, right blue triangle" <-> "left blue
    triangle, right red circle"); a single or count scene on a named background with the objects' colour
    and the background's exchanged ("blue background, yellow circle" <-> "yellow background, blue circle")
    when that is a valid scene (not a black background under a cartoon's black outline)."""
    if scene.kind == "pair":
        a, b = scene.objects
        return dataclasses.replace(scene, objects=(dataclasses.replace(a, cell=b.cell),
                                                   dataclasses.replace(b, cell=a.cell)))
    if scene.background is None:
        return None
    colour = scene.objects[0].colour
    try:
        return dataclasses.replace(scene, background=colour,
                                   objects=tuple(dataclasses.replace(o, colour=scene.background) for o in scene.objects))
    except ValueError:
        return None


def with_share(weights: dict, key, share: float) -> dict:
    """``weights`` (summing to 1) with ``key`` drawn with ``share`` and the others sharing the rest in
    their own ratio."""
    if key not in weights or not 0.0 <= share < 1.0:
        raise ValueError(f"a share in [0, 1) of one of {list(weights)} is needed, got {share} of {key!r}")
    others = sum(w for k, w in weights.items() if k != key)
    return {k: share if k == key else w * (1 - share) / others for k, w in weights.items()}


def normalised_kind_weights(weights: dict[str, float]) -> dict[str, float]:
    """``weights`` for all three kinds, normalised to sum 1; unknown kinds and negative or all-zero
    weights are refused by name."""
    _check_kind_weights(weights)
    total = float(sum(weights.values()))
    return {k: float(weights.get(k, 0.0)) / total for k in KIND_WEIGHTS}


def _check_kind_weights(weights: dict[str, float]) -> None:
    # an unknown kind would otherwise be drawn and silently become a pair scene
    unknown = sorted(set(weights) - set(KIND_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown scene kind(s) {', '.join(unknown)}; known: {', '.join(KIND_WEIGHTS)}")
    if any(not w >= 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(f"scene kind weights must be >= 0 and not all 0, got {weights}")


def _random_scene(rng: np.random.Generator, kind: str | None, background_probability: float,
                  weights: dict[str, float], style_weights: dict[str | None, float] | None) -> Scene:
    kind = kind or _drawn(rng, weights)
    style = _style(rng) if style_weights is None else _drawn(rng, style_weights)
    cells = rng.permutation(GRID * GRID)
    if kind == "single":
        objects = (_object(rng, int(cells[0])),)
    elif kind == "count":
        n = int(rng.integers(1, 4))
        first = _object(rng, int(cells[0]))
        objects = tuple(SceneObject(first.shape, first.colour, int(c)) for c in cells[:n])
    else:
        a = _object(rng, int(cells[0]))
        b = _object(rng, int(cells[1]))
        while (b.shape, b.colour) == (a.shape, a.colour):   # two different objects
            b = _object(rng, int(cells[1]))
        objects = (a, b)
    return Scene(objects, kind, _background(rng, objects, style, background_probability), style)


def _object(rng: np.random.Generator, cell: int) -> SceneObject:
    return SceneObject(SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))], cell)


def _drawn(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    return keys[rng.choice(len(keys), p=list(weights.values()))]


def _style(rng: np.random.Generator):
    if rng.random() < NO_STYLE_WEIGHT:
        return None
    styled = [s for s in STYLES if s is not None]
    return styled[rng.integers(len(styled))]


def _background(rng: np.random.Generator, objects, style, probability: float):
    if style == "ink" or rng.random() >= probability:
        return None
    allowed = [c for c in COLOURS
               if not (style == "cartoon" and c == "black")   # the outline would vanish
               and all(colour_distance(PALETTE[c], PALETTE[o.colour]) >= MIN_BACKGROUND_CONTRAST for o in objects)]
    return allowed[rng.integers(len(allowed))] if allowed else None
