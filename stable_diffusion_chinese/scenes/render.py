"""Draw a ``Scene`` as a 128x128 RGB uint8 array; the same (scene, seed) always gives the same pixels.

Shapes are drawn 4x supersampled with Pillow and box-filtered down (anti-aliased edges); the seed
only moves each object a little inside its cell, scales it slightly and drives the style textures.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import styles
from .shapes import outline
from .world import CANVAS, CELL, OBJECT_WIDTH, OUTLINE, PALETTE, PIXEL_BLOCK, Scene, background_rgb, cell_centre

SUPERSAMPLE = 4
SIZE_JITTER = (0.85, 0.95)   # object width factor of 0.3 * 128 = 38.4 px: 32.6-36.5 px inside a 42.7 px cell
OFFSET_JITTER = 1.0          # pixels; objects in neighbouring cells stay >= 4 px apart, never overlapping


def render(scene: Scene, seed: int = 0) -> np.ndarray:
    """[128, 128, 3] uint8."""
    rng = np.random.default_rng(seed)
    placements = [_placement(o.cell, rng) for o in scene.objects]
    if scene.style == "ink":
        # ink: draw on white, then turn each pixel's brightness into ink on rice paper
        flat = _draw(scene, placements, (255, 255, 255), outline_width=0)
        return styles.ink(flat, rng)
    if scene.style == "pixel":
        layers = [(PALETTE[o.colour], _block_coverage(o.shape, p)) for o, p in zip(scene.objects, placements)]
        return styles.pixel_blocks(background_rgb(scene), layers)
    flat = _draw(scene, placements, background_rgb(scene),
                 outline_width=OUTLINE if scene.style == "cartoon" else 0)
    if scene.style == "oil":
        return styles.oil(flat, rng)
    if scene.style == "watercolor":
        return styles.watercolor(flat, rng)
    return flat


def _placement(cell: int, rng: np.random.Generator) -> tuple[float, float, float]:
    cx, cy = cell_centre(cell)
    width = OBJECT_WIDTH * rng.uniform(*SIZE_JITTER)
    dx, dy = rng.uniform(-OFFSET_JITTER, OFFSET_JITTER, size=2)
    assert width / 2 + OFFSET_JITTER < CELL / 2
    return cx + dx, cy + dy, width


def _block_coverage(shape: str, placement) -> np.ndarray:
    """[16, 16] share of each 8x8 block the shape covers (from a 4x supersampled drawing)."""
    s, b = SUPERSAMPLE, PIXEL_BLOCK
    cx, cy, width = placement
    image = Image.new("L", (CANVAS * s, CANVAS * s), 0)
    kind, geometry = outline(shape, cx * s, cy * s, width * s)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if kind == "ellipse" else draw.polygon)(geometry, fill=255)
    n = CANVAS // b
    return np.asarray(image, np.float32).reshape(n, b * s, n, b * s).mean(axis=(1, 3)) / 255.0


def _draw(scene: Scene, placements, background, outline_width: int) -> np.ndarray:
    s = SUPERSAMPLE
    image = Image.new("RGB", (CANVAS * s, CANVAS * s), tuple(background))
    draw = ImageDraw.Draw(image)
    for obj, (cx, cy, width) in zip(scene.objects, placements):
        colour = PALETTE[obj.colour]
        kind, geometry = outline(obj.shape, cx * s, cy * s, width * s)
        extra = {"outline": (0, 0, 0), "width": outline_width * s} if outline_width else {}
        if kind == "ellipse":
            draw.ellipse(geometry, fill=colour, **extra)
        else:
            draw.polygon(geometry, fill=colour, **extra)
    return np.asarray(image.reduce(s), dtype=np.uint8)
