"""Shape outlines as polygons (or a circle's box), in pixel coordinates, centred on a point.

Shared by the renderer and the judge's shape templates so both draw exactly the same geometry.
"""
from __future__ import annotations

import math

#: a regular pentagram has inner/outer radius 0.382; a slightly fatter star stays a star at 128 px
STAR_INNER_RATIO = 0.42
# square side relative to the object width: at 0.85-0.95 x 38.4 px wide objects no square has both
# edges on the 8-px block grid, where it would be indistinguishable from pixel art
SQUARE_SIDE = 0.84


def outline(shape: str, cx: float, cy: float, width: float):
    """("ellipse", box) or ("polygon", points) for a shape about ``width`` wide, its bounding box centred on (cx, cy)."""
    if shape == "circle":
        r = width / 2
        return "ellipse", (cx - r, cy - r, cx + r, cy + r)
    if shape == "square":
        h = width * SQUARE_SIDE / 2
        return "polygon", [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # equilateral, pointing up
        height = width * math.sqrt(3) / 2
        return "polygon", [(cx, cy - height / 2), (cx + width / 2, cy + height / 2), (cx - width / 2, cy + height / 2)]
    if shape == "star":
        return "polygon", _star(cx, cy, width)
    raise ValueError(f"unknown shape {shape!r}")


def _star(cx: float, cy: float, width: float) -> list[tuple[float, float]]:
    """Five points up; the outer radius is chosen so the star is ``width`` wide, the box centred on (cx, cy)."""
    outer = width / (2 * math.cos(math.radians(18)))
    inner = outer * STAR_INNER_RATIO
    height = outer * (1 + math.cos(math.radians(36)))
    top = cy - height / 2
    centre_y = top + outer
    points = []
    for k in range(10):
        radius = outer if k % 2 == 0 else inner
        angle = math.radians(-90 + 36 * k)
        points.append((cx + radius * math.cos(angle), centre_y + radius * math.sin(angle)))
    return points
