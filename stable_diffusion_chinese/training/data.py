"""Training batches. A batch is a pure function of (seed, batch index), so resuming needs no data state.

- ``SceneData``: unlimited procedurally drawn scenes with Chinese captions (the embedded model).
- ``FolderData``: a user's folder of images + ``metadata.jsonl`` (one ``{"file_name": ..., "text": ...}``
  per line), the layout diffusers' ``train_text_to_image`` reads with ``--train_data_dir``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..scenes.captions import caption
from ..scenes.render import render
from ..scenes.sampling import BACKGROUND_PROBABILITY, KIND_WEIGHTS, held_out, normalised_kind_weights, sample_scene, twin

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def to_model_images(pixels: list[np.ndarray]) -> np.ndarray:
    """uint8 [H, W, 3] images -> float32 [B, 3, H, W] in [-1, 1]."""
    return np.stack([p.astype(np.float32) / 127.5 - 1.0 for p in pixels]).transpose(0, 3, 1, 2)


class SceneData:
    def __init__(self, batch_size: int, seed: int = 0, split: str = "train",
                 background_probability: float = BACKGROUND_PROBABILITY, kinds: dict[str, float] | None = None,
                 twins: bool = False, styles: dict[str | None, float] | None = None):
        """``kinds``: how often single / count / pair scenes are drawn (default ``scenes.sampling.KIND_WEIGHTS``);
        ``styles``: how often each style is (default ``scenes.sampling.STYLE_WEIGHTS``).

        ``twins``: each scene that has a twin (``sampling.twin``: a pair with its objects' cells swapped, an
        object on a named background with the two colours exchanged) is followed in its batch by it, unless
        the twin is held out or the batch is full. The two captions hold the same words and differ only in
        which word goes with which, so a text encoder that reads captions as bags of words cannot fit both:
        the step's gradient is about binding. A twinned scene fills two slots."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.seed, self.split = int(batch_size), int(seed), split
        self.background_probability = float(background_probability)
        self.kinds = KIND_WEIGHTS if kinds is None else normalised_kind_weights(kinds)
        self.twins = bool(twins)
        self.styles = styles

    def scenes(self, index: int) -> tuple[list, list[int]]:
        """The scenes of batch ``index`` and their render seeds."""
        rng = np.random.default_rng([self.seed, int(index)])
        scenes = []
        while len(scenes) < self.batch_size:
            scene = sample_scene(rng, self.split, background_probability=self.background_probability,
                                 kind_weights=self.kinds, style_weights=self.styles)
            scenes.append(scene)
            other = twin(scene) if self.twins and len(scenes) < self.batch_size else None
            if other is not None and held_out(other) == (self.split == "eval"):
                scenes.append(other)
        return scenes, [int(s) for s in rng.integers(2 ** 31, size=self.batch_size)]

    def batch(self, index: int) -> tuple[np.ndarray, list[str]]:
        scenes, seeds = self.scenes(index)
        pixels = [render(s, seed=seed) for s, seed in zip(scenes, seeds)]
        return to_model_images(pixels), self.captions(index, 0)

    def captions(self, index: int, variant: int) -> list[str]:
        """Captions of batch ``index``; each ``variant`` words the same scenes afresh."""
        scenes, _ = self.scenes(index)
        rng = np.random.default_rng([self.seed, int(index), 1000 + int(variant)])
        return [caption(s, rng, self.split) for s in scenes]


class FolderData:
    """Images resized (shorter side) and centre-cropped to ``resolution``; batches walk a seeded shuffle per epoch."""

    def __init__(self, folder: str | os.PathLike, batch_size: int, resolution: int, seed: int = 0):
        self.folder = Path(folder)
        metadata = self.folder / "metadata.jsonl"
        if not metadata.is_file():
            raise FileNotFoundError(f"{self.folder} has no metadata.jsonl "
                                    '(one {"file_name": ..., "text": ...} object per line)')
        self.items = _read_metadata(metadata)
        if not self.items:
            raise ValueError(f"{metadata} lists no images")
        self.batch_size, self.resolution, self.seed = int(batch_size), int(resolution), int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, index: int) -> tuple[np.ndarray, list[str]]:
        n = len(self.items)
        picks = []
        for k in range(index * self.batch_size, (index + 1) * self.batch_size):
            epoch, position = divmod(k, n)
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            picks.append(self.items[order[position]])
        pixels = [self._load(path) for path, _ in picks]
        return to_model_images(pixels), [text for _, text in picks]

    def _load(self, path: Path) -> np.ndarray:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = self.resolution / min(image.size)
            size = (max(self.resolution, round(image.width * scale)), max(self.resolution, round(image.height * scale)))
            image = image.resize(size, Image.BICUBIC)
            left, top = (image.width - self.resolution) // 2, (image.height - self.resolution) // 2
            return np.asarray(image.crop((left, top, left + self.resolution, top + self.resolution)))


def _read_metadata(path: Path) -> list[tuple[Path, str]]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from None
        if not isinstance(entry, dict) or "file_name" not in entry or "text" not in entry:
            raise ValueError(f'{path}:{number} needs "file_name" and "text" keys, got {line.strip()[:80]}')
        image = path.parent / entry["file_name"]
        if not image.is_file():
            raise FileNotFoundError(f"{path}:{number} names {entry['file_name']!r}, which is not in {path.parent}")
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{path}:{number}: {entry['file_name']!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        if not isinstance(entry["text"], str):
            raise ValueError(f"{path}:{number}: text must be a string")
        items.append((image, entry["text"]))
    return items
