"""AltDiffusion's text encoder: diffusers ``RobertaSeriesModelWithTransformation``.

An XLM-RoBERTa body (``roberta.*``, the post-LN encoder BERT uses) and a linear ``transformation``
from ``hidden_size`` to ``project_dim``. Facts from diffusers'
``pipelines/deprecated/alt_diffusion/modeling_roberta_series.py``:

* ``encode`` returns ``projection_state``, the ``[0]`` the AltDiffusion pipeline takes:
  ``transformation(last_hidden_state)``, or with ``has_pre_transformation``
  ``transformation_pre(pre_LN(hidden_states[-2]))`` - the output of the second-to-last layer, so the
  last layer (and ``transformation``) are loaded but unused then, as in the reference.
* the body is built with its pooler, which the forward never uses: ``roberta.pooler.*`` is skipped
  on loading (diffusers also lists ``pooler`` and ``logit_scale`` as ignorable checkpoint keys).
* position ids count real tokens from ``pad_token_id + 1`` and give padding ``pad_token_id``
  (transformers ``create_position_ids_from_input_ids``), decided by the ids, not the mask.
"""
from __future__ import annotations

import dataclasses

import paddle
from paddle import nn

from .base import TextEncoder
from .masks import padding_bias
from .post_ln_encoder import PostLNConfig, PostLNEncoder, TokenEmbeddings


@dataclasses.dataclass
class RobertaSeriesTextEncoderConfig(PostLNConfig):
    """``RobertaSeriesConfig`` keys: ``XLMRobertaConfig`` defaults plus the projection options."""

    pad_token_id: int = 1
    project_dim: int = 512
    has_pre_transformation: bool = False
    #: read by pipelines: whether diffusers would pass the tokenizer's attention mask
    use_attention_mask: bool = True

    model_types = ("xlm-roberta", "roberta")


class RobertaBody(nn.Layer):
    """``XLMRobertaModel`` without its (unused) pooler."""

    def __init__(self, config: RobertaSeriesTextEncoderConfig):
        super().__init__()
        self.embeddings = TokenEmbeddings(config)
        self.encoder = PostLNEncoder(config)


def roberta_position_ids(input_ids: paddle.Tensor, pad_token_id: int) -> paddle.Tensor:
    """``pad + cumsum(is_token) * is_token``: tokens get pad+1, pad+2, ...; padding gets ``pad``."""
    is_token = (input_ids != pad_token_id).astype("int64")
    return paddle.cumsum(is_token, axis=1) * is_token + pad_token_id


class RobertaSeriesTextEncoder(TextEncoder):
    config_class = RobertaSeriesTextEncoderConfig
    ignored_checkpoint_keys = ("roberta.embeddings.position_ids", "roberta.embeddings.token_type_ids",
                               "roberta.pooler.*", "logit_scale")

    def __init__(self, config: RobertaSeriesTextEncoderConfig):
        super().__init__(config)
        self.roberta = RobertaBody(config)
        self.transformation = nn.Linear(config.hidden_size, config.project_dim)
        if config.has_pre_transformation:
            self.transformation_pre = nn.Linear(config.hidden_size, config.project_dim)
            self.pre_LN = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    @property
    def max_length(self) -> int:
        # the last position id is L + pad_token_id, which must index the position table
        return self.config.max_position_embeddings - self.config.pad_token_id - 1

    @property
    def embedding_dim(self) -> int:
        return self.config.project_dim

    def forward(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor | None = None,
                clip_skip: int | None = None) -> paddle.Tensor:
        positions = roberta_position_ids(input_ids, self.config.pad_token_id)
        hidden = self.roberta.embeddings(input_ids, positions)
        bias = padding_bias(attention_mask, hidden.dtype)
        if self.config.has_pre_transformation:
            hidden = self.roberta.encoder(hidden, bias, self.config.num_hidden_layers - 1)
            return self.transformation_pre(self.pre_LN(hidden))
        return self.transformation(self.roberta.encoder(hidden, bias))
