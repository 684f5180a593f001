"""Multi-head scaled dot-product attention, the one implementation all our networks call.

Two options change how (never what) it computes:

* ``max_scores`` (attention slicing): the query axis is cut into chunks so that no chunk's
  [B, H, Lq_chunk, Lk] score matrix holds more than ``max_scores`` elements. Each query row's softmax
  only needs its own row of scores, so chunks are independent and the result equals the unsliced one.
  At 1024x1024 the UNet's first self-attention has 16384 tokens: its full score matrix for batch 2 and
  8 heads is 2*8*16384^2 floats = 17 GB, which slicing brings down to the budget.
* ``fused`` (static graphs only): self-attention through Paddle's CPU kernel ``self_dp_attention``,
  which walks 512x512 tiles of the score matrix with an online softmax (never materialising it). It is
  reachable only from a static program (``paddle.jit.to_static``), is built with AVX-512 intrinsics
  (``paddle/phi/kernels/fusion/cpu/self_dp_attention_kernel.cc``), and takes no additive bias; the
  export code decides when it may be used (``stable_diffusion_chinese.runtime.export``).
"""
from __future__ import annotations

import math

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
              bias: paddle.Tensor | None = None, *, max_scores: int | None = None,
              fused: bool = False) -> paddle.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over ``heads`` heads; q, k, v are [B, L, H*D].

    ``bias`` is additive and broadcasts to [B, H, Lq, Lk] (0 where attended, a large negative
    number where masked), as transformers builds its masks. See the module docstring for
    ``max_scores`` and ``fused``.
    """
    if fused:
        if bias is not None:
            raise ValueError("fused attention takes no bias (self_dp_attention has no mask input)")
        return _fused_self_attention(q, k, v, heads)
    q, k, v = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    scale = q.shape[-1] ** -0.5
    rows = query_rows_within(max_scores, q.shape, k.shape[2])
    if rows is None or rows >= q.shape[2]:
        return merge_heads(_attend_heads(q, k, v, scale, bias))
    chunks = []
    for start in range(0, q.shape[2], rows):
        chunk_bias = bias
        if bias is not None and bias.shape[2] != 1:  # a per-query bias (causal) is cut like the queries
            chunk_bias = bias[:, :, start:start + rows]
        chunks.append(_attend_heads(q[:, :, start:start + rows], k, v, scale, chunk_bias))
    return merge_heads(paddle.concat(chunks, axis=2))


def query_rows_within(max_scores: int | None, query_shape, key_length: int) -> int | None:
    """How many query rows fit ``max_scores`` score elements ([B, H, rows, Lk]); None = no slicing.

    Needs concrete shapes: a static graph traced with unknown sizes cannot be sliced this way.
    """
    if max_scores is None:
        return None
    if not isinstance(max_scores, int) or isinstance(max_scores, bool) or max_scores < 1:
        raise ValueError(f"max_scores must be a positive integer (score elements per chunk), got {max_scores!r}")
    b, h, length = query_shape[0], query_shape[1], query_shape[2]
    if min(b, h, length, key_length) < 0:
        raise ValueError("attention slicing needs known tensor sizes; it cannot be traced into a static graph "
                         "with dynamic sizes (disable it before exporting)")
    return max(1, max_scores // max(1, b * h * key_length))


def _attend_heads(q, k, v, scale: float, bias) -> paddle.Tensor:
    scores = paddle.matmul(q, k, transpose_y=True) * scale
    if bias is not None:
        scores = scores + bias
    return paddle.matmul(F.softmax(scores, axis=-1), v)


def _fused_self_attention(q, k, v, heads: int) -> paddle.Tensor:
    if paddle.in_dynamic_mode():
        raise RuntimeError("fused attention (self_dp_attention) exists only in static graphs; "
                           "it is switched on by the exporter, not in eager mode")
    width = q.shape[-1]
    if width < 0 or width % heads:
        raise ValueError(f"fused attention needs a known width divisible by {heads} heads, got {width}")
    dim = width // heads
    # [B, L, 3, H, D]: the packed layout the kernel reads (BERT's fused qkv projection layout)
    packed = paddle.stack([t.reshape([0, 0, heads, dim]) for t in (q, k, v)], axis=2)
    out = paddle._C_ops.self_dp_attention(packed, 1.0 / math.sqrt(dim), heads)  # [B, L, H, D]
    return out.reshape([0, 0, width])
