"""A deterministic pixel judge: does an image show the intended ``Scene``?

Method (numpy only, no learned parts):
1. Background = per-channel median of a 4-pixel border strip.
2. Foreground = pixels whose 3x3-box-smoothed colour is more than ``FOREGROUND_DISTANCE`` (RGB
   distance) from the background; the 4-connected components of that mask eroded by two pixels are the
   objects (smaller than ``MIN_AREA`` pixels: noise; larger than ``MAX_AREA``: a blob that makes the
   count wrong). The number of objects is the **count**. Each
   object's own mask is then re-thresholded at half its own contrast and hole-filled (the edge of a
   blurred shape; a cartoon outline's interior).
3. **Position** of a component = the grid cell of its bounding-box centre.
4. **Shape**: a mask with solidity (area / convex-hull area) below ``STAR_SOLIDITY`` is a star;
   otherwise the convex template (circle / square / upward triangle, drawn by the renderer's own
   geometry) with the highest IoU against the mask rescaled to its bounding box. Pixel-style images
   are matched by synthesis instead: each shape is drawn at the renderer's sizes and every whole-pixel
   shift, reduced to 8x8 blocks as the renderer does, and compared block by block; shapes tying for
   the best IoU all count as consistent.
5. **Colour** = per-channel median of the component's core (mask eroded by 2 pixels, dark pixels left
   out unless most are dark, so a cartoon outline or a soft edge does not count), nearest of the 8
   palette colours or their watercolour washes (halfway to white). Not judged in ink scenes (ink is greyscale by definition).
6. **Style**, first rule that fires: pixel (image gradients sit on the 8-pixel block grid and the
   image is close to its 8x8 block means),
   ink (background within ``PAPER_DISTANCE`` of rice paper), watercolour (objects match washed
   colours), cartoon (a dark ring inside the object edge around a non-dark interior), oil
   (mid-frequency paint dabs in the background), else no style. A scene whose objects are all black cannot show
   a cartoon outline, so "cartoon" and "none" both count as right there.

Per scene kind: single -> the largest component is the object; count -> count and the majority
shape/colour; pair -> each intended object must be matched by a component in its cell, and
``both`` says both objects have the right cell, colour and shape.
"""
from __future__ import annotations

import dataclasses
from collections import Counter, deque
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from .shapes import outline
from .world import CANVAS, CELL, COLOURS, GRID, OBJECT_WIDTH, PALETTE, PIXEL_BLOCK, RICE_PAPER, SHAPES, Scene, colour_distance

FOREGROUND_DISTANCE = 30.0   # RGB distance; oil dabs reach 25, the faintest object (washed pink) ~53
MIN_AREA = 150               # pixels; the smallest object (a star) covers ~450
MAX_AREA = 2500              # pixels; the largest object (a pixel-art circle) covers <= 1600: bigger is no object
BORDER = 4
PAPER_DISTANCE = 16.0
TEMPLATE_SIZE = 32
SHAPE_LEVEL = 0.5           # shape mask: this share of the object's own contrast (the edge of a blurred shape)
STAR_SOLIDITY = 0.8         # area / convex-hull area: a star is ~0.5, the convex shapes ~1
# pixel art needs both: the image gradient concentrated on the 8-px block grid (clean pixel art 1.0,
# VAE-decoded ~0.3, other styles mostly <= 0.17 but up to 0.38 when square edges fall on the grid) and a
# small residual from the block-averaged image relative to the edge energy (clean 0, decoded 0.66-0.79,
# other styles >= 0.9 clean or decoded)
BLOCKINESS_THRESHOLD = 0.22
BLOCK_RESIDUAL_THRESHOLD = 0.85
OIL_TEXTURE_THRESHOLD = 1.2  # std of the background's mid frequencies: clean oil >= 2.3, others <= 0.9;
#                              VAE-decoded oil 1.35-2.4, decoded none <= 1.0
TEXTURE_BOX = 15
CARTOON_DARK_SHARE = 0.4
DARK_LUMINANCE = 70.0


@dataclasses.dataclass
class Detected:
    cell: int
    shape: str
    colour: str
    washed: bool
    area: int
    bbox: tuple[int, int, int, int]   # x0, y0, x1, y1 (inclusive)
    #: every shape that explains the pixels equally well (pixel style can make two shapes' blocks identical)
    shapes: tuple[str, ...] = ()

    def is_shape(self, name: str) -> bool:
        return name in (self.shapes or (self.shape,))


@dataclasses.dataclass
class Verdict:
    """Per-attribute correctness; ``None`` = not applicable to this scene."""
    colour: Optional[bool]
    shape: Optional[bool]
    position: Optional[bool]
    count: Optional[bool]
    style: Optional[bool]
    both: Optional[bool]          # pair scenes: both objects right (cell, colour and shape)
    background: Optional[bool]    # scenes that name a background colour
    detected_style: Optional[str]
    objects: list[Detected]

    def as_dict(self) -> dict:
        keys = ("colour", "shape", "position", "count", "style", "both", "background")
        return {k: getattr(self, k) for k in keys}


def judge(image, scene: Scene) -> Verdict:
    """Judge an RGB image (uint8 [128, 128, 3] array or PIL image) against the intended scene."""
    rgb = _as_array(image)
    background = np.median(_border(rgb), axis=0)
    distance = np.sqrt(((_box3(rgb) - background) ** 2).sum(-1))
    mask = distance > FOREGROUND_DISTANCE
    # components of the mask eroded by two pixels: objects in neighbouring cells are >= 4 px apart, and
    # soft edges or texture must not bridge them
    found = _components(_erode(mask, 2))
    blobs = sum(len(c[0]) > MAX_AREA for c in found)     # noise or a smeared image: nothing countable
    components = [c for c in found if MIN_AREA <= len(c[0]) <= MAX_AREA]
    blocky = _is_pixel_art(rgb)
    objects = [_describe(rgb, distance, c, blocky) for c in components]
    style = _style(rgb, mask, background, objects)
    style_ok = _style_ok(style, scene)
    colour_judged = scene.style != "ink"
    bg_ok = None
    if scene.background is not None:
        bg_ok = _nearest_colour(background)[0] == scene.background
    judged = {"single": _single, "count": _count, "pair": _pair}[scene.kind](scene, objects)
    if blobs:
        judged["count"] = False
    if not colour_judged:
        judged["colour"] = None
    return Verdict(**judged, style=style_ok, background=bg_ok, detected_style=style, objects=objects)


def _single(scene: Scene, objects: list[Detected]) -> dict:
    want = scene.objects[0]
    if not objects:
        return dict(colour=False, shape=False, position=False, count=False, both=None)
    main = max(objects, key=lambda o: o.area)
    return dict(colour=main.colour == want.colour, shape=main.is_shape(want.shape), position=main.cell == want.cell,
                count=len(objects) == 1, both=None)


def _count(scene: Scene, objects: list[Detected]) -> dict:
    want = scene.objects[0]
    if not objects:
        return dict(colour=False, shape=False, position=None, count=False, both=None)
    return dict(colour=_majority([o.colour for o in objects]) == want.colour,
                shape=sum(o.is_shape(want.shape) for o in objects) * 2 > len(objects),
                position=None, count=len(objects) == scene.count, both=None)


def _pair(scene: Scene, objects: list[Detected]) -> dict:
    by_cell = {}
    for o in objects:
        if o.cell not in by_cell or o.area > by_cell[o.cell].area:
            by_cell[o.cell] = o
    found = [by_cell.get(want.cell) for want in scene.objects]
    position = all(f is not None for f in found)
    shape = all(f is not None and f.is_shape(w.shape) for f, w in zip(found, scene.objects))
    colour = all(f is not None and f.colour == w.colour for f, w in zip(found, scene.objects))
    colour_counts = colour or scene.style == "ink"      # ink has no colours to get right
    return dict(colour=colour, shape=shape, position=position, count=len(objects) == 2,
                both=position and shape and colour_counts)


# ---------------------------------------------------------------------------------------------- pixels

def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    rgb = np.asarray(image)
    if rgb.shape != (CANVAS, CANVAS, 3):
        raise ValueError(f"the judge expects a {CANVAS}x{CANVAS} RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"the judge expects uint8 pixels, got {rgb.dtype}")
    return rgb.astype(np.float32)


def _border(rgb: np.ndarray) -> np.ndarray:
    b = BORDER
    return np.concatenate([rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3),
                           rgb[b:-b, :b].reshape(-1, 3), rgb[b:-b, -b:].reshape(-1, 3)])


def _box3(values: np.ndarray) -> np.ndarray:
    padded = np.pad(values, [(1, 1), (1, 1)] + [(0, 0)] * (values.ndim - 2), mode="edge")
    h, w = values.shape[:2]
    return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _components(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected components as (ys, xs) index arrays, in scan order."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        label = len(out) + 1
        labels[y0, x0] = label
        queue, ys, xs = deque([(y0, x0)]), [], []
        while queue:
            y, x = queue.popleft()
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        out.append((np.asarray(ys), np.asarray(xs)))
    return out


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        padded = np.pad(mask, 1, constant_values=False)
        mask = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask


def _describe(rgb: np.ndarray, distance: np.ndarray, component, blocky: bool) -> Detected:
    ys, xs = component
    own = np.zeros(distance.shape, bool)
    own[ys, xs] = True
    shape_mask = _shape_mask(distance, own)
    sy, sx = np.nonzero(shape_mask)
    x0, x1, y0, y1 = int(sx.min()), int(sx.max()), int(sy.min()), int(sy.max())
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    cell = min(int(cy // CELL), GRID - 1) * GRID + min(int(cx // CELL), GRID - 1)
    shapes = _pixel_shapes(shape_mask, cx, cy) if blocky else (_shape(shape_mask[y0:y1 + 1, x0:x1 + 1]),)
    colour, washed = _nearest_colour(_object_colour(rgb, own))
    return Detected(cell, shapes[0], colour, washed, len(ys), (x0, y0, x1, y1), shapes)


def _shape_mask(distance: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The component re-thresholded at a share of its own contrast (near the true edge of a blurred shape), holes filled."""
    level = SHAPE_LEVEL * np.percentile(distance[own], 90)
    near = _dilate(own, 5)   # undo the 2-px erosion of the components, plus a margin for soft edges
    mask = near & (distance > max(level, FOREGROUND_DISTANCE * 0.5))
    if mask.sum() < MIN_AREA // 2:
        mask = own
    return _fill_holes(mask)


def _object_colour(rgb: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Median colour of the component's core, leaving out a dark (cartoon) outline unless the object is dark."""
    core = _erode(own, 2)
    pixels = rgb[core] if core.sum() >= 10 else rgb[own]
    luminance = pixels @ np.float32([0.299, 0.587, 0.114])
    light = pixels[luminance >= DARK_LUMINANCE]
    if len(light) * 4 >= len(pixels):
        pixels = light
    return np.median(pixels, axis=0)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        padded = np.pad(mask, 1, constant_values=False)
        mask = (padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])
    return mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Pixels not reachable from the border through non-mask pixels are inside the shape."""
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    free = ~mask
    while True:
        grown = outside.copy()
        grown[1:, :] |= outside[:-1, :]
        grown[:-1, :] |= outside[1:, :]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= free
        if (grown == outside).all():
            return ~outside
        outside = grown


def _nearest_colour(rgb) -> tuple[str, bool]:
    """(palette name, whether the washed form matched better)."""
    best = min(((colour_distance(rgb, ref), name, washed) for name, ref, washed in _COLOUR_REFERENCES))
    return best[1], best[2]


_COLOUR_REFERENCES = [(name, PALETTE[name], False) for name in COLOURS] + \
                     [(name, tuple(c * 0.5 + 127.5 for c in PALETTE[name]), True) for name in COLOURS]


def _shape(crop: np.ndarray) -> str:
    """A concave blob is a star (solidity); otherwise the convex template with the best IoU."""
    if _solidity(crop) < STAR_SOLIDITY:
        return "star"
    resized = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize(
        (TEMPLATE_SIZE, TEMPLATE_SIZE), Image.BILINEAR), np.float32) / 255.0 > 0.5
    scores = {name: (resized & t).sum() / max((resized | t).sum(), 1) for name, t in _templates().items()}
    return max(("circle", "square", "triangle"), key=lambda name: scores[name])


def _solidity(crop: np.ndarray) -> float:
    """Pixel area over the area of the convex hull of the pixels' corners."""
    ys, xs = np.nonzero(crop)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    hull = _convex_hull(np.unique(corners, axis=0))
    x, y = hull[:, 0].astype(np.float64), hull[:, 1].astype(np.float64)
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    return float(len(xs) / area) if area > 0 else 1.0


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; ``points`` sorted unique [N, 2]."""
    def half(seq):
        chain = []
        for p in seq:
            while len(chain) >= 2 and _cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(tuple(p))
        return chain
    ordered = [tuple(p) for p in points[np.lexsort((points[:, 1], points[:, 0]))]]
    lower, upper = half(ordered), half(ordered[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _pixel_shapes(mask: np.ndarray, cx: float, cy: float) -> tuple[str, ...]:
    """Pixel style: analysis by synthesis. Each shape is drawn at the renderer's sizes and at every
    whole-pixel shift within half a block of the observed centre, reduced to 8x8 blocks (on when more
    than half covered, as the renderer's snapping does), and compared with the observed blocks by IoU."""
    b = PIXEL_BLOCK
    n = CANVAS // b
    observed = mask.reshape(n, b, n, b).mean((1, 3)) > 0.5
    scores = dict.fromkeys(SHAPES, -1.0)
    for name in SHAPES:
        for scale in _PIXEL_SCALES:
            table = _coverage_table(name, scale)
            for dy in range(-b // 2, b // 2 + 1):
                for dx in range(-b // 2, b // 2 + 1):
                    blocks = _blocks_at(table, round(cx) + dx, round(cy) + dy, n)
                    iou = (blocks & observed).sum() / max((blocks | observed).sum(), 1)
                    scores[name] = max(scores[name], float(iou))
    top = max(scores.values())
    return tuple(sorted((name for name in SHAPES if scores[name] >= top - 1e-9), key=SHAPES.index))


_PIXEL_SCALES = (0.85, 0.875, 0.9, 0.925, 0.95)   # the renderer's size range (render.SIZE_JITTER)
_LOCAL = 64          # side (pixels) of the window a shape is drawn in for the block search
_SUPER = 4           # supersampling of that window
_COVERAGE_CACHE: dict = {}


def _coverage_table(name: str, scale: float) -> np.ndarray:
    """Summed-area table of the shape drawn 4x supersampled, centred in a 64-pixel window."""
    key = (name, scale)
    if key not in _COVERAGE_CACHE:
        s = _LOCAL * _SUPER
        image = Image.new("L", (s, s), 0)
        kind, geometry = outline(name, s / 2, s / 2, OBJECT_WIDTH * scale * _SUPER)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if kind == "ellipse" else draw.polygon)(geometry, fill=1)
        table = np.zeros((s + 1, s + 1), np.int64)
        table[1:, 1:] = np.asarray(image, np.int64).cumsum(0).cumsum(1)
        _COVERAGE_CACHE[key] = table
    return _COVERAGE_CACHE[key]


def _blocks_at(table: np.ndarray, cx: int, cy: int, n: int) -> np.ndarray:
    """Which 8x8 blocks of the canvas are more than half covered by the shape centred at (cx, cy)."""
    b, s = PIXEL_BLOCK, _LOCAL * _SUPER
    edges = np.arange(n + 1) * b
    xs = np.clip((edges - cx + _LOCAL // 2) * _SUPER, 0, s)
    ys = np.clip((edges - cy + _LOCAL // 2) * _SUPER, 0, s)
    sums = table[ys[1:, None], xs[None, 1:]] - table[ys[:-1, None], xs[None, 1:]] \
        - table[ys[1:, None], xs[None, :-1]] + table[ys[:-1, None], xs[None, :-1]]
    return sums > (b * _SUPER) ** 2 / 2


_TEMPLATE_CACHE: dict[str, np.ndarray] = {}


def _templates() -> dict[str, np.ndarray]:
    """Each shape drawn by the renderer's geometry, cropped to its bounding box, at 32x32."""
    if not _TEMPLATE_CACHE:
        for name in SHAPES:
            s = 8 * TEMPLATE_SIZE
            image = Image.new("L", (s, s), 0)
            kind, geometry = outline(name, s / 2, s / 2, s * 0.8)
            draw = ImageDraw.Draw(image)
            (draw.ellipse if kind == "ellipse" else draw.polygon)(geometry, fill=255)
            array = np.asarray(image) > 127
            ys, xs = np.nonzero(array)
            crop = Image.fromarray(array[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.uint8) * 255)
            _TEMPLATE_CACHE[name] = np.asarray(crop.resize((TEMPLATE_SIZE, TEMPLATE_SIZE), Image.BILINEAR)) > 127
    return _TEMPLATE_CACHE


# ---------------------------------------------------------------------------------------------- style

def _style(rgb: np.ndarray, mask: np.ndarray, background: np.ndarray, objects: list[Detected]) -> str:
    if _is_pixel_art(rgb):
        return "pixel"
    if colour_distance(background, RICE_PAPER) < PAPER_DISTANCE:
        return "ink"
    if objects and sum(o.washed for o in objects) * 2 > len(objects):
        return "watercolor"
    if _cartoon_outline(rgb, mask, objects):
        return "cartoon"
    if _texture(rgb, mask) > OIL_TEXTURE_THRESHOLD:
        return "oil"
    return "none"


def _style_ok(style: str, scene: Scene) -> bool:
    want = scene.style or "none"
    if want in ("none", "cartoon") and all(o.colour == "black" for o in scene.objects):
        return style in ("none", "cartoon")
    return style == want


def _is_pixel_art(rgb: np.ndarray) -> bool:
    return _blockiness(rgb) > BLOCKINESS_THRESHOLD and _block_residual(rgb) < BLOCK_RESIDUAL_THRESHOLD


def _block_residual(rgb: np.ndarray) -> float:
    """sum |image - its 8x8 block means| / sum |image gradient| (grey levels)."""
    grey = rgb.mean(-1)
    n = grey.shape[0] // PIXEL_BLOCK
    means = grey.reshape(n, PIXEL_BLOCK, n, PIXEL_BLOCK).mean((1, 3)).repeat(PIXEL_BLOCK, 0).repeat(PIXEL_BLOCK, 1)
    edges = np.abs(np.diff(grey, axis=1)).sum() + np.abs(np.diff(grey, axis=0)).sum()
    return float(np.abs(grey - means).sum() / edges) if edges > 0 else 0.0


def _blockiness(rgb: np.ndarray) -> float:
    grey = rgb.mean(-1)
    dx = np.abs(np.diff(grey, axis=1))            # dx[:, j] is between columns j and j+1
    dy = np.abs(np.diff(grey, axis=0))
    on_grid = dx[:, PIXEL_BLOCK - 1::PIXEL_BLOCK].sum() + dy[PIXEL_BLOCK - 1::PIXEL_BLOCK, :].sum()
    total = dx.sum() + dy.sum()
    return float(on_grid / total) if total > 0 else 0.0


def _texture(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Std of the background's mid frequencies (3x3 box minus 15x15 box): oil's paint dabs."""
    grey = rgb.mean(-1)
    band = _box3(grey) - _box(grey, TEXTURE_BOX)
    background = _erode(~mask, TEXTURE_BOX // 2 + 1)
    return float(band[background].std()) if background.sum() > 100 else 0.0


def _box(values: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window (edges extended), via a summed-area table."""
    half = size // 2
    padded = np.pad(values, half, mode="edge")
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1))
    table[1:, 1:] = padded.cumsum(0).cumsum(1)
    h, w = values.shape
    return (table[size:size + h, size:size + w] - table[:h, size:size + w] - table[size:size + h, :w]
            + table[:h, :w]) / (size * size)


def _cartoon_outline(rgb: np.ndarray, mask: np.ndarray, objects: list[Detected]) -> bool:
    luminance = rgb @ np.float32([0.299, 0.587, 0.114])
    votes = []
    for o in objects:
        if o.colour == "black":
            continue
        x0, y0, x1, y1 = o.bbox
        own = np.zeros_like(mask)
        own[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
        # the outer pixel of the mask is the anti-aliased/smoothed edge, so the ring starts one pixel in
        ring = _erode(own, 1) & ~_erode(own, 4)
        votes.append((luminance[ring] < DARK_LUMINANCE).mean() > CARTOON_DARK_SHARE if ring.any() else False)
    return bool(votes) and sum(votes) * 2 > len(votes)


def _majority(values):
    return Counter(values).most_common(1)[0][0]
