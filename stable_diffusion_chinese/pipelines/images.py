"""Images in and out of the pipelines: PIL/numpy <-> [-1, 1] tensors, masks; reading and size checks are in
``image_inputs``."""
from __future__ import annotations

import numpy as np
import paddle
from PIL import Image

from .image_inputs import check_size, fit, load_image  # noqa: F401  (the pipelines' one import)


def to_tensor(images: list[Image.Image]) -> paddle.Tensor:
    """RGB images -> [B, 3, H, W] in [-1, 1]."""
    array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images]).transpose(0, 3, 1, 2)
    return paddle.to_tensor(array * 2.0 - 1.0)


def mask_to_tensor(masks: list[Image.Image]) -> paddle.Tensor:
    """Grayscale masks -> [B, 1, H, W] of 0/1 (white = repaint), binarised at 0.5 as diffusers does."""
    array = np.stack([np.asarray(m, dtype=np.float32) / 255.0 for m in masks])[:, None]
    return paddle.to_tensor((array >= 0.5).astype(np.float32))


def to_uint8(decoded: paddle.Tensor) -> np.ndarray:
    """VAE output [B, 3, H, W] in about [-1, 1] -> [B, H, W, 3] uint8."""
    array = np.clip(decoded.numpy().transpose(0, 2, 3, 1) / 2.0 + 0.5, 0.0, 1.0)
    return (array * 255.0).round().astype(np.uint8)
