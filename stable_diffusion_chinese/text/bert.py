"""Chinese BERT text encoder (Taiyi-Stable-Diffusion-1B-Chinese): transformers ``BertModel``.

Returns ``last_hidden_state``, which is what diffusers' StableDiffusionPipeline takes (``[0]``).
The pooler (``pooler.dense``, tanh of the first token) feeds no SD pipeline, so by default it is not
built and ``pooler.*`` checkpoint keys are skipped; ``add_pooling_layer=True`` (the name of
transformers' constructor argument) builds it, loads it strictly and offers ``pooled_output``.
"""
from __future__ import annotations

import dataclasses

import paddle
from paddle import nn

from .base import TextEncoder
from .masks import padding_bias
from .post_ln_encoder import PostLNConfig, PostLNEncoder, TokenEmbeddings

#: buffers transformers registers (non-persistent, but older exports saved them)
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


@dataclasses.dataclass
class BertTextEncoderConfig(PostLNConfig):
    """transformers ``BertConfig`` keys; ``add_pooling_layer`` is ours (see the module docstring)."""

    add_pooling_layer: bool = False


class BertPooler(nn.Layer):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, last_hidden_state: paddle.Tensor) -> paddle.Tensor:
        return paddle.tanh(self.dense(last_hidden_state[:, 0]))


class BertTextEncoder(TextEncoder):
    config_class = BertTextEncoderConfig

    def __init__(self, config: BertTextEncoderConfig):
        super().__init__(config)
        self.embeddings = TokenEmbeddings(config)
        self.encoder = PostLNEncoder(config)
        if config.add_pooling_layer:
            self.pooler = BertPooler(config.hidden_size)
            self.ignored_checkpoint_keys = _BUFFERS
        else:
            self.pooler = None
            self.ignored_checkpoint_keys = _BUFFERS + ("pooler.*",)

    def forward(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor | None = None,
                clip_skip: int | None = None) -> paddle.Tensor:
        positions = paddle.arange(input_ids.shape[1], dtype="int64").unsqueeze(0)
        hidden = self.embeddings(input_ids, positions)
        return self.encoder(hidden, padding_bias(attention_mask, hidden.dtype))

    def pooled_output(self, last_hidden_state: paddle.Tensor) -> paddle.Tensor:
        """transformers' ``pooler_output``; needs ``add_pooling_layer=True``."""
        if self.pooler is None:
            raise ValueError("this BertTextEncoder was built without a pooler (add_pooling_layer=False)")
        return self.pooler(last_hidden_state)
