"""CLIP text encoder (SD 1.x): transformers ``CLIPTextModel``, pre-LayerNorm with a causal mask.

Parameter names are those of SD checkpoints (``text_model.embeddings.token_embedding.weight``,
``text_model.encoder.layers.N.self_attn.q_proj``, ..., ``text_model.final_layer_norm``).
transformers 5 dropped the ``text_model.`` level from the module tree and saves files without it;
``canonical_checkpoint_keys`` adds it back so both layouts load.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import paddle
from paddle import nn

from ..config import ModelConfig, UnsupportedConfigError
from ..models.attention_ops import attention
from .activations import activation
from .base import TextEncoder
from .masks import causal_bias

PREFIX = "text_model."


@dataclasses.dataclass
class CLIPTextEncoderConfig(ModelConfig):
    """transformers ``CLIPTextConfig`` keys (its defaults) that shape the network."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def validate(self, raw) -> None:
        if "text_config" in raw:
            raise UnsupportedConfigError("this is a full CLIPModel config; pass its 'text_config' part")
        self.require(raw, "model_type", ["clip_text_model"])
        activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise UnsupportedConfigError(f"hidden_size={self.hidden_size} is not a multiple of "
                                         f"num_attention_heads={self.num_attention_heads}")


class CLIPAttention(nn.Layer):
    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        width = config.hidden_size
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        mixed = attention(self.q_proj(hidden), self.k_proj(hidden), self.v_proj(hidden), self.heads, bias)
        return self.out_proj(mixed)


class CLIPMLP(nn.Layer):
    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.act(self.fc1(hidden)))


class CLIPEncoderLayer(nn.Layer):
    """Pre-LN: ``x + attn(LN1(x))``, then ``x + mlp(LN2(x))``."""

    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden), bias)
        return hidden + self.mlp(self.layer_norm2(hidden))


class CLIPEncoder(nn.Layer):
    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__()
        self.layers = nn.LayerList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor, num_layers: int) -> paddle.Tensor:
        for layer in self.layers[:num_layers]:
            hidden = layer(hidden, bias)
        return hidden


class CLIPTextEmbeddings(nn.Layer):
    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: paddle.Tensor) -> paddle.Tensor:
        # positions 0..L-1 (transformers' ``position_ids`` buffer sliced to L)
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class CLIPTextTransformer(nn.Layer):
    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)


class CLIPTextEncoder(TextEncoder):
    """``encode`` returns ``last_hidden_state`` (after ``final_layer_norm``), or with ``clip_skip=k``
    diffusers' convention: ``final_layer_norm(hidden_states[-(k + 1)])``, the output of the layer
    ``k`` before the last (``hidden_states[0]`` is the embedding output, so ``0 <= k <= layers``).

    ``attention_mask`` is combined with the causal mask as transformers does (padded keys hidden);
    SD pipelines pass none, and with right padding the real tokens' outputs do not depend on it.
    """

    config_class = CLIPTextEncoderConfig
    ignored_checkpoint_keys = (PREFIX + "embeddings.position_ids",)
    supports_clip_skip = True

    def __init__(self, config: CLIPTextEncoderConfig):
        super().__init__(config)
        self.text_model = CLIPTextTransformer(config)

    def forward(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor | None = None,
                clip_skip: int | None = None) -> paddle.Tensor:
        num_layers = self.config.num_hidden_layers
        if clip_skip is not None and not (isinstance(clip_skip, int) and 0 <= clip_skip <= num_layers):
            raise ValueError(f"clip_skip must be an integer from 0 to {num_layers} (the number of layers), "
                             f"got {clip_skip!r}")
        model = self.text_model
        hidden = model.embeddings(input_ids)
        bias = causal_bias(input_ids.shape[1], attention_mask, hidden.dtype)
        hidden = model.encoder(hidden, bias, num_layers - (clip_skip or 0))
        return model.final_layer_norm(hidden)

    @classmethod
    def canonical_checkpoint_keys(cls, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add ``text_model.`` to the keys of a checkpoint saved by transformers 5 (which has none)."""
        if any(key.startswith(PREFIX) for key in tensors):
            return dict(tensors)
        return {PREFIX + key: value for key, value in tensors.items()}
