"""Checking and converting what callers pass to ``encode``: token ids and an optional padding mask.

Bad ids would otherwise surface as an index error deep inside Paddle's embedding kernel (or, on
some devices, silently read garbage), so they are checked here once with a message naming the problem.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import paddle


def _as_int64(value: Any, name: str) -> paddle.Tensor:
    if isinstance(value, paddle.Tensor):
        tensor = value
    else:
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(f"{name} must be a rectangular array of integers, got ragged or mixed data")
        tensor = paddle.to_tensor(array)
    if tensor.dtype == paddle.bool:
        return tensor.astype("int64")
    if tensor.dtype not in (paddle.int64, paddle.int32, paddle.int16, paddle.int8, paddle.uint8):
        raise TypeError(f"{name} must hold integers, got dtype {tensor.dtype}")
    return tensor.astype("int64")


def token_ids(value: Any, *, vocab_size: int, max_length: int) -> paddle.Tensor:
    """``value`` as an int64 ``[batch, length]`` tensor of ids in ``[0, vocab_size)``."""
    ids = _as_int64(value, "input_ids")
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty 2-D [batch, length] array, got shape {list(ids.shape)}")
    if ids.shape[1] > max_length:
        raise ValueError(f"input_ids has {ids.shape[1]} tokens per sequence but this text encoder takes "
                         f"at most {max_length}")
    low, high = int(ids.min().item()), int(ids.max().item())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids must lie in [0, {vocab_size}) for this vocabulary, "
                         f"got values from {low} to {high}")
    return ids


def padding_mask(value: Any, ids: paddle.Tensor) -> paddle.Tensor | None:
    """``value`` (1 = real token, 0 = padding) as a bool tensor shaped like ``ids``; None stays None."""
    if value is None:
        return None
    mask = _as_int64(value, "attention_mask")
    if list(mask.shape) != list(ids.shape):
        raise ValueError(f"attention_mask has shape {list(mask.shape)} but input_ids has shape {list(ids.shape)}")
    if bool(((mask != 0) & (mask != 1)).any().item()):
        raise ValueError("attention_mask must contain only 0 (padding) and 1 (token)")
    return mask.astype("bool")
