"""The five styles of the scene world, as filters on a clean flat drawing (uint8 [H, W, 3]).

水墨 ink: greyscale ink on rice paper with soft edges; 卡通 cartoon: flat colour with a 3-pixel black
outline (drawn by the renderer); 像素风格 pixel: 8x8-pixel blocks (from per-object block coverage);
油画 oil: visible brush-stroke texture (broad light and dark dabs); 水彩 watercolour: colours washed
halfway to white with blurred edges and uneven pigment.
"""
from __future__ import annotations

import numpy as np
from .world import PIXEL_BLOCK, RICE_PAPER

INK_BLUR = 1.5           # Gaussian radius of the ink's soft edges (pixels)
OIL_STRENGTH = 8.0       # brush texture amplitude (0-255 levels) per std of the dab field; at most 14.4
OIL_CLIP = 1.8           # the dab field is clipped at this many stds: no dab is mistaken for an object
OIL_DAB_LENGTH = 16      # brush dab size (pixels): one random value per 16 x 8 px, bilinearly blended
OIL_DAB_HEIGHT = 8
WATERCOLOR_BLUR = 2.0    # Gaussian radius of the watercolour's blurred edges
WATERCOLOR_MOTTLE = 6.0  # amplitude of the low-frequency pigment unevenness


def ink(flat_on_white: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink density from the drawing's luminance (Rec. 601), laid onto rice paper."""
    rgb = flat_on_white.astype(np.float32)
    lightness = (rgb @ np.float32([0.299, 0.587, 0.114])) / 255.0
    lightness = _blur(lightness, INK_BLUR)
    wash = 1.0 + 0.015 * _smooth_noise(rng, lightness.shape, 6.0)    # uneven ink
    lightness = np.clip(lightness * wash, 0.0, 1.0)
    return _u8(lightness[..., None] * np.float32(RICE_PAPER))


def pixel_blocks(background, layers) -> np.ndarray:
    """8x8 blocks: a block takes the colour of the object covering more than half of it, else the background.

    ``layers`` is ``[(rgb, coverage [16, 16])]``. Deciding per object (rather than snapping each block's
    mean colour to the nearest scene colour) keeps a grey edge block of a black shape from turning into
    some other object's colour.
    """
    b = PIXEL_BLOCK
    n = layers[0][1].shape[0] if layers else 16
    blocks = np.empty((n, n, 3), np.float32)
    blocks[:] = background
    best = np.full((n, n), 0.5, np.float32)
    for rgb, coverage in layers:
        wins = coverage > best
        blocks[wins] = rgb
        best = np.where(wins, coverage, best)
    return _u8(blocks.repeat(b, axis=0).repeat(b, axis=1))


def oil(flat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brush strokes: broad dabs of lighter and darker paint (~16 px long, ~8 px tall) over the whole
    canvas, modulating all channels alike, plus slightly softened edges.

    The texture is deliberately coarser than the VAE's 8-px latent cells: finer random texture is
    averaged away by the 8x-downsampling VAE, and a nearest-upsampling conv decoder cannot paint a
    fixed fine pattern into a flat region either (tried: decoded oil looked flat).
    """
    h, w, _ = flat.shape
    coarse = rng.standard_normal((h // OIL_DAB_HEIGHT + 2, w // OIL_DAB_LENGTH + 2)).astype(np.float32)
    strokes = _resize(coarse, h + 2 * OIL_DAB_HEIGHT, w + 2 * OIL_DAB_LENGTH)
    shift_y, shift_x = int(rng.integers(OIL_DAB_HEIGHT)), int(rng.integers(OIL_DAB_LENGTH))
    strokes = strokes[shift_y:shift_y + h, shift_x:shift_x + w]
    strokes = np.clip((strokes - strokes.mean()) / (strokes.std() + 1e-6), -OIL_CLIP, OIL_CLIP)
    softened = np.stack([_blur(flat[..., c].astype(np.float32), 0.7) for c in range(3)], axis=-1)
    return _u8(softened + OIL_STRENGTH * strokes[..., None])


def _resize(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a float array (Pillow's float mode)."""
    from PIL import Image
    return np.asarray(Image.fromarray(values, mode="F").resize((w, h), Image.BILINEAR), np.float32)


def watercolor(flat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    washed = flat.astype(np.float32) * 0.5 + 127.5
    blurred = np.stack([_blur(washed[..., c], WATERCOLOR_BLUR) for c in range(3)], axis=-1)
    mottle = WATERCOLOR_MOTTLE * _smooth_noise(rng, flat.shape[:2], 8.0)
    # pigment pools where there is colour: the unevenness scales with how far a pixel is from white
    depth = (255.0 - blurred) / 255.0
    return _u8(blurred - mottle[..., None] * depth * 2.0)


def _smooth_noise(rng: np.random.Generator, shape, radius: float) -> np.ndarray:
    """Unit-variance Gaussian noise blurred to blobs of about ``radius`` pixels."""
    noise = _blur(rng.standard_normal(shape).astype(np.float32), radius)
    return noise / (noise.std() + 1e-6)


def _blur(channel: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of one float channel, edges extended (Pillow blurs 8-bit images only)."""
    half = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-half, half + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(channel.astype(np.float32), half, mode="edge")
    rows = sum(k * padded[:, i:i + channel.shape[1]] for i, k in enumerate(kernel))
    return sum(k * rows[i:i + channel.shape[0], :] for i, k in enumerate(kernel)).astype(np.float32)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
