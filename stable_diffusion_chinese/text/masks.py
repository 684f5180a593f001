"""Additive attention biases built from a padding mask and/or causality.

transformers combines every masking rule into one boolean "may attend" mask and only then turns it
into 0 / most-negative-finite-number (``masking_utils``); adding two large negatives separately could
overflow to -inf and give NaN rows, so we do the same: combine booleans first, convert once.
A query row with no allowed key (left padding under a causal mask) then gets equal scores everywhere
and attends uniformly, as transformers' eager attention does; those rows are padding outputs.
"""
from __future__ import annotations

import paddle


def additive_bias(allowed: paddle.Tensor, dtype: paddle.dtype) -> paddle.Tensor:
    """0 where ``allowed`` is true, the most negative finite value of ``dtype`` elsewhere."""
    zero = paddle.zeros([1], dtype=dtype)
    lowest = paddle.full([1], paddle.finfo(dtype).min, dtype=dtype)
    return paddle.where(allowed, zero, lowest)


def padding_bias(mask: paddle.Tensor | None, dtype: paddle.dtype) -> paddle.Tensor | None:
    """[B, L] bool (true = token) -> [B, 1, 1, L] bias hiding padded keys; None when there is no mask."""
    if mask is None:
        return None
    return additive_bias(mask.unsqueeze([1, 2]), dtype)


def causal_bias(length: int, mask: paddle.Tensor | None, dtype: paddle.dtype) -> paddle.Tensor:
    """[B or 1, 1, L, L] bias letting query i see keys j <= i (and, with ``mask``, only real tokens)."""
    allowed = paddle.tril(paddle.ones([length, length], dtype="int32")).astype("bool").unsqueeze([0, 1])
    if mask is not None:
        allowed = paddle.logical_and(allowed, mask.unsqueeze([1, 2]))
    return additive_bias(allowed, dtype)
