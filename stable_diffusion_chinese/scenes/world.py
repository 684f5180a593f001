"""The fixed scene world of the embedded model (issue 4): canvas, palette, shapes, grid, styles.

Everything a renderer, a caption writer and a judge must agree on lives here, as data.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

CANVAS = 128                      # images are CANVAS x CANVAS RGB
GRID = 3                          # 3 x 3 position cells, numbered row-major 0..8
CELL = CANVAS / GRID
OBJECT_WIDTH = 0.3 * CANVAS       # "about 0.3 of the canvas wide"
WHITE = (245, 245, 245)           # default background
RICE_PAPER = (240, 232, 215)      # the ink style's background
PIXEL_BLOCK = 8                   # pixel style: 8x8-pixel blocks (one latent cell each at VAE factor 8)
OUTLINE = 3                       # cartoon style: outline width in pixels

#: colour name -> RGB, exactly as issue 4 lists them
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "orange": (245, 145, 30), "yellow": (240, 215, 40), "green": (40, 170, 70),
    "blue": (40, 90, 220), "purple": (150, 60, 200), "pink": (245, 150, 195), "black": (25, 25, 25),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star")
#: None is "no style": a clean flat drawing
STYLES = (None, "ink", "cartoon", "pixel", "oil", "watercolor")
KINDS = ("single", "count", "pair")
#: a named background must differ from every object colour by at least this RGB distance, so objects
#: stay visible (and separable by the judge) even after the watercolour wash halves the contrast
MIN_BACKGROUND_CONTRAST = 100.0


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    cell: int  # 0..8, row-major: 0 = top left, 4 = centre, 8 = bottom right

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour not in PALETTE:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {COLOURS}")
        if not (isinstance(self.cell, int) and 0 <= self.cell < GRID * GRID):
            raise ValueError(f"cell must be an int in 0..{GRID * GRID - 1}, got {self.cell!r}")


@dataclasses.dataclass(frozen=True)
class Scene:
    """What one image shows.

    ``kind`` says what the caption talks about: "single" (one object and its position), "count"
    (1-3 copies of one shape and colour; positions are not mentioned) or "pair" (two objects, each
    with its position). ``background`` is a palette colour name or None (white, or rice paper in ink).
    """

    objects: tuple[SceneObject, ...]
    kind: str = "single"
    background: Optional[str] = None
    style: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown scene kind {self.kind!r}; expected one of {KINDS}")
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; expected one of {STYLES}")
        n = len(self.objects)
        if not 1 <= n <= 3:
            raise ValueError(f"a scene has 1 to 3 objects, got {n}")
        if len({o.cell for o in self.objects}) != n:
            raise ValueError("two objects share a cell; objects must not overlap")
        if self.kind == "single" and n != 1:
            raise ValueError("a 'single' scene has exactly one object")
        if self.kind == "pair" and n != 2:
            raise ValueError("a 'pair' scene has exactly two objects")
        if self.kind == "count" and len({(o.shape, o.colour) for o in self.objects}) != 1:
            raise ValueError("the objects of a 'count' scene share one shape and colour")
        if self.background is not None:
            if self.background not in PALETTE:
                raise ValueError(f"unknown background colour {self.background!r}")
            if self.style == "ink":
                raise ValueError("ink scenes are always on rice paper; they take no background colour")
            if self.style == "cartoon" and self.background == "black":
                raise ValueError("a cartoon's black outline would vanish on a black background")
            for o in self.objects:
                if colour_distance(PALETTE[o.colour], PALETTE[self.background]) < MIN_BACKGROUND_CONTRAST:
                    raise ValueError(f"{o.colour} objects are too close to a {self.background} background")

    @property
    def count(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "background": self.background, "style": self.style,
                "objects": [dataclasses.asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        return cls(tuple(SceneObject(**o) for o in data["objects"]), data.get("kind", "single"),
                   data.get("background"), data.get("style"))


def colour_distance(a, b) -> float:
    return float(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)) ** 0.5)


def cell_centre(cell: int) -> tuple[float, float]:
    """(x, y) pixel centre of a grid cell."""
    row, col = divmod(cell, GRID)
    return ((col + 0.5) * CELL, (row + 0.5) * CELL)


def background_rgb(scene: Scene) -> tuple[int, int, int]:
    if scene.style == "ink":
        return RICE_PAPER
    return PALETTE[scene.background] if scene.background else WHITE
