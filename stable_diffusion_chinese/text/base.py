"""The one interface every text encoder offers the pipelines: ``encode(input_ids, attention_mask)``."""
from __future__ import annotations

from typing import Any

import paddle

from ..models.pretrained import PretrainedLayer
from .inputs import padding_mask, token_ids


class TextEncoder(PretrainedLayer):
    """A prompt encoder: token ids ``[B, L]`` -> embeddings ``[B, L, embedding_dim]`` for cross-attention.

    Subclasses implement ``forward(input_ids, attention_mask, clip_skip)`` on checked tensors
    (int64 ids, bool mask or None); ``encode`` is the public entry that checks and converts first.
    Layers run in inference form: dropout is left out (it is the identity in eval mode).
    """

    #: whether ``clip_skip`` (diffusers' "use an earlier CLIP layer") means anything for this model
    supports_clip_skip: bool = False

    @property
    def max_length(self) -> int:
        """The longest token sequence the position table covers."""
        return self.config.max_position_embeddings

    @property
    def embedding_dim(self) -> int:
        """Width D of the returned embeddings (the UNet's ``cross_attention_dim``)."""
        return self.config.hidden_size

    def encode(self, input_ids: Any, attention_mask: Any = None, *,
               clip_skip: int | None = None) -> paddle.Tensor:
        """Embeddings ``[B, L, D]`` for ``input_ids`` (numpy or Paddle integers, ``[B, L]``).

        ``attention_mask`` (1 = token, 0 = padding) hides padded keys from attention; diffusers'
        pipelines pass it only when the encoder's config says ``use_attention_mask``.
        """
        if clip_skip is not None and not self.supports_clip_skip:
            raise ValueError(f"clip_skip applies to CLIP text encoders only, not {type(self).__name__}")
        ids = token_ids(input_ids, vocab_size=self.config.vocab_size, max_length=self.max_length)
        mask = padding_mask(attention_mask, ids)
        return self(ids, mask, clip_skip)

