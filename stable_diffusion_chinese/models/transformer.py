"""Spatial transformer of the SD UNet and the VAE's single-head attention (diffusers' names)."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from .attention_ops import attention


class Attention(nn.Layer):
    """Multi-head attention with diffusers' ``to_q/to_k/to_v/to_out.0`` parameters.

    ``norm_groups`` gives the VAE variant: GroupNorm on a [B, C, H, W] input, attention over the
    H*W positions, and the input added back.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention_dim: int | None = None,
                 qkv_bias: bool = False, norm_groups: int | None = None, norm_eps: float = 1e-6):
        super().__init__()
        inner = heads * dim_head
        context_dim = cross_attention_dim or query_dim
        self.heads = heads
        self.group_norm = nn.GroupNorm(norm_groups, query_dim, epsilon=norm_eps) if norm_groups else None
        self.to_q = nn.Linear(query_dim, inner, bias_attr=None if qkv_bias else False)
        self.to_k = nn.Linear(context_dim, inner, bias_attr=None if qkv_bias else False)
        self.to_v = nn.Linear(context_dim, inner, bias_attr=None if qkv_bias else False)
        self.to_out = nn.LayerList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])
        # how attention is computed, never what: set by stable_diffusion_chinese.runtime (attention_ops.attention)
        self.max_scores: int | None = None  # attention slicing budget, score elements per chunk
        self.fused_self_attention = False  # static graphs only: Paddle's fused CPU self-attention kernel

    def forward(self, x: paddle.Tensor, context: paddle.Tensor | None = None) -> paddle.Tensor:
        if self.group_norm is None:
            return self._attend(x, x if context is None else context)
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape([b, c, h * w]).transpose([0, 2, 1])
        out = self._attend(tokens, tokens).transpose([0, 2, 1]).reshape([b, c, h, w])
        return out + x

    def _attend(self, x: paddle.Tensor, context: paddle.Tensor) -> paddle.Tensor:
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                        max_scores=self.max_scores, fused=self.fused_self_attention and context is x)
        return self.to_out[0](out)


class GEGLU(nn.Layer):
    """Gated GELU (Shazeer 2020): one projection gives the value and, gelu'd, its gate."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        value, gate = self.proj(x).chunk(2, axis=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Layer):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # index 1 is a (no-op) dropout in diffusers; kept so parameter names line up (net.0, net.2)
        self.net = nn.LayerList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Layer):
    """Pre-LN self-attention, cross-attention to the text, and a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: paddle.Tensor, context: paddle.Tensor) -> paddle.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Layer):
    """Image features to tokens, ``num_layers`` transformer blocks, back to an image, plus the input."""

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int, num_layers: int = 1,
                 use_linear_projection: bool = False):
        super().__init__()
        dim_head = channels // heads
        inner = heads * dim_head
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, channels, epsilon=1e-6)
        if use_linear_projection:
            self.proj_in, self.proj_out = nn.Linear(channels, inner), nn.Linear(inner, channels)
        else:
            self.proj_in, self.proj_out = nn.Conv2D(channels, inner, 1), nn.Conv2D(inner, channels, 1)
        self.transformer_blocks = nn.LayerList(
            [BasicTransformerBlock(inner, heads, dim_head, cross_attention_dim) for _ in range(num_layers)])

    def forward(self, x: paddle.Tensor, context: paddle.Tensor) -> paddle.Tensor:
        b, _, h, w = x.shape
        hidden = self.norm(x)
        if not self.use_linear_projection:
            hidden = self.proj_in(hidden)
        hidden = hidden.transpose([0, 2, 3, 1]).reshape([b, h * w, hidden.shape[1]])
        if self.use_linear_projection:
            hidden = self.proj_in(hidden)
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        if self.use_linear_projection:
            hidden = self.proj_out(hidden)
        hidden = hidden.reshape([b, h, w, hidden.shape[-1]]).transpose([0, 3, 1, 2])
        if not self.use_linear_projection:
            hidden = self.proj_out(hidden)
        return hidden + x
