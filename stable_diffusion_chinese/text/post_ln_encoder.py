"""The post-LayerNorm transformer shared by BERT and XLM-RoBERTa (transformers ``BertModel`` layout).

BERT and XLM-R have the same layers and the same parameter names
(``embeddings.{word,position,token_type}_embeddings``, ``embeddings.LayerNorm``,
``encoder.layer.N.attention.self.{query,key,value}``, ``attention.output.{dense,LayerNorm}``,
``intermediate.dense``, ``output.{dense,LayerNorm}``); they differ only in how position ids are
counted, which the caller decides. Each block adds its residual *before* its LayerNorm ("post-LN").
"""
from __future__ import annotations

import dataclasses

import paddle
from paddle import nn

from ..config import ModelConfig, UnsupportedConfigError
from ..models.attention_ops import attention
from .activations import activation


@dataclasses.dataclass
class PostLNConfig(ModelConfig):
    """transformers ``BertConfig`` keys (its defaults) that shape the network."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    #: ``model_type`` values this config accepts (a guard against handing in another model's config)
    model_types = ("bert",)

    def validate(self, raw) -> None:
        self.require(raw, "model_type", self.model_types)
        activation(self.hidden_act)
        # decoder/cross-attention BERTs and relative position embeddings are other architectures
        self.require(raw, "is_decoder", [False])
        self.require(raw, "add_cross_attention", [False])
        self.require(raw, "position_embedding_type", ["absolute"])
        if self.hidden_size % self.num_attention_heads:
            raise UnsupportedConfigError(f"hidden_size={self.hidden_size} is not a multiple of "
                                         f"num_attention_heads={self.num_attention_heads}")


class TokenEmbeddings(nn.Layer):
    """word + token type + position embeddings, then LayerNorm (transformers ``BertEmbeddings``)."""

    def __init__(self, config: PostLNConfig):
        super().__init__()
        # No ``padding_idx``: Paddle's Embedding returns zeros for that id whatever the weight holds,
        # while torch only uses it at initialisation; checkpoints may store a non-zero padding row.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, input_ids: paddle.Tensor, position_ids: paddle.Tensor) -> paddle.Tensor:
        # token type 0 everywhere: the text encoders of SD pipelines never pass token_type_ids
        token_types = paddle.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.LayerNorm(embeddings)


class SelfAttention(nn.Layer):
    """The q/k/v projections and scaled dot-product attention (``attention.self``)."""

    def __init__(self, config: PostLNConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
        return attention(self.query(hidden), self.key(hidden), self.value(hidden), self.heads, bias)


class ResidualOutput(nn.Layer):
    """``LayerNorm(dense(x) + residual)``: ``attention.output`` and ``output`` in transformers."""

    def __init__(self, in_features: int, config: PostLNConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, hidden: paddle.Tensor, residual: paddle.Tensor) -> paddle.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class AttentionBlock(nn.Layer):
    def __init__(self, config: PostLNConfig):
        super().__init__()
        self.self = SelfAttention(config)  # transformers' name, hence ``attention.self.query``
        self.output = ResidualOutput(config.hidden_size, config)

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
        return self.output(self.self(hidden, bias), hidden)


class Intermediate(nn.Layer):
    def __init__(self, config: PostLNConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.dense(hidden))


class PostLNLayer(nn.Layer):
    def __init__(self, config: PostLNConfig):
        super().__init__()
        self.attention = AttentionBlock(config)
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config.intermediate_size, config)

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
        hidden = self.attention(hidden, bias)
        return self.output(self.intermediate(hidden), hidden)


class PostLNEncoder(nn.Layer):
    """The layer stack (``encoder.layer.N``)."""

    def __init__(self, config: PostLNConfig):
        super().__init__()
        self.layer = nn.LayerList([PostLNLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden: paddle.Tensor, bias: paddle.Tensor | None,
                num_layers: int | None = None) -> paddle.Tensor:
        """Run the first ``num_layers`` layers (all by default).

        transformers' ``hidden_states[k]`` is the output after ``k`` layers (index 0 = embeddings),
        so ``hidden_states[-2]`` is ``num_layers=len(layer) - 1``; stopping early skips dead work.
        """
        for block in self.layer[:num_layers]:
            hidden = block(hidden, bias)
        return hidden
