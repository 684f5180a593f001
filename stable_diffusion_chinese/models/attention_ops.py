"""Multi-head scaled dot-product attention, the one implementation all our networks call."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F


def split_heads(x: paddle.Tensor, heads: int) -> paddle.Tensor:
    """[B, L, H*D] -> [B, H, L, D]."""
    b, length, width = x.shape
    return x.reshape([b, length, heads, width // heads]).transpose([0, 2, 1, 3])


def merge_heads(x: paddle.Tensor) -> paddle.Tensor:
    """[B, H, L, D] -> [B, L, H*D]."""
    b, heads, length, dim = x.shape
    return x.transpose([0, 2, 1, 3]).reshape([b, length, heads * dim])


def attention(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, heads: int,
              bias: paddle.Tensor | None = None) -> paddle.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over ``heads`` heads; q, k, v are [B, L, H*D].

    ``bias`` is additive and broadcasts to [B, H, Lq, Lk] (0 where attended, a large negative
    number where masked), as transformers builds its masks.
    """
    q, k, v = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    scores = paddle.matmul(q, k, transpose_y=True) * (q.shape[-1] ** -0.5)
    if bias is not None:
        scores = scores + bias
    return merge_heads(paddle.matmul(F.softmax(scores, axis=-1), v))
