"""The evaluation prompt set: held-out combinations (sampling.held_out) worded with held-out frames
(captions.EVAL_FRAMES). Training never produces any of these prompts' scene combinations or phrasings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .captions import caption
from .sampling import sample_scene
from .world import Scene

#: share of each scene kind in the set
KIND_SHARES = (("single", 0.4), ("count", 0.25), ("pair", 0.35))
DEFAULT_SIZE = 200
DEFAULT_SEED = 2024
FIRST_SEED = 1000                 # the shipped set's generation seeds are FIRST_SEED + index
SELECTION_FIRST_SEED = 100_000    # a selection set's start here, far from the shipped set's


def build_eval_set(size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, first_seed: int = FIRST_SEED) -> list[dict]:
    """``[{"prompt", "scene", "seed"}]``; ``seed`` is the generation seed for that prompt (``first_seed + index``).

    Another ``seed`` (and ``first_seed``) gives a sister set from the same held-out combinations and frames: a
    selection set to choose among candidate models on, so the shipped set's figures are not tuned to it."""
    kinds = []
    for kind, share in KIND_SHARES:
        kinds += [kind] * round(share * size)
    kinds = (kinds + ["single"] * size)[:size]
    items = []
    for index, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, index])
        scene = sample_scene(rng, "eval", kind)
        items.append({"prompt": caption(scene, rng, "eval"), "scene": scene.to_dict(), "seed": first_seed + index})
    return items


def build_selection_set(seed: int, size: int = DEFAULT_SIZE) -> list[dict]:
    """A sister of the shipped set (``build_eval_set``'s other ``seed``, generation seeds from SELECTION_FIRST_SEED)."""
    if seed == DEFAULT_SEED:
        raise ValueError(f"selection set seed {DEFAULT_SEED} is the seed of the shipped set itself; choose another")
    return build_eval_set(size, seed, SELECTION_FIRST_SEED)


def save_eval_set(path: str | Path, items: list[dict]) -> None:
    Path(path).write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")


def load_eval_set(path: str | Path) -> list[tuple[str, Scene, int]]:
    return as_triples(json.loads(Path(path).read_text(encoding="utf-8")))


def as_triples(items: list[dict]) -> list[tuple[str, Scene, int]]:
    """``build_eval_set``'s items as ``(prompt, scene, generation seed)``."""
    return [(item["prompt"], Scene.from_dict(item["scene"]), int(item["seed"])) for item in items]
