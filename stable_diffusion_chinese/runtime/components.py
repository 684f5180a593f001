"""Predictor-backed stand-ins for the UNet, the VAE and the text encoder, with the eager call signatures.

The pipeline calls ``unet(sample, t, embeddings)``, ``vae.decode(latents)``, ``vae.encode(images)`` and
``text_encoder.encode(ids, mask)`` and reads ``.config`` (and ``vae.downscale_factor``); these classes offer
exactly that, so a pipeline runs on either runtime without knowing which one it holds.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import paddle

from ..models.vae import DiagonalGaussian
from ..models.vae_tiling import VAETiling, tiled_decode, tiled_encode
from ..text.inputs import padding_mask, token_ids
from .predictor import GraphPredictor


def _float_array(value: Any) -> np.ndarray:
    if isinstance(value, paddle.Tensor):
        return value.astype("float32").numpy()
    return np.asarray(value, dtype=np.float32)


class _Component:
    """What the pipeline asks of every network besides calling it."""

    def __init__(self, config, network_class: type):
        self.config = config
        self.network_class = network_class

    def eval(self):
        return self  # predictors have no training mode


class InferenceUNet(_Component):
    def __init__(self, predictor: GraphPredictor, config, network_class: type):
        super().__init__(config, network_class)
        self.predictor = predictor

    def __call__(self, sample, timestep, encoder_hidden_states) -> paddle.Tensor:
        x, context = _float_array(sample), _float_array(encoder_hidden_states)
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet expects latents [B, {self.config.in_channels}, H, W], got {list(x.shape)}")
        if context.ndim != 3 or context.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(f"UNet expects text embeddings [B, L, {self.config.cross_attention_dim}], "
                             f"got {list(context.shape)}")
        # one timestep for the whole batch or one per sample, as the eager UNet accepts
        timesteps = np.broadcast_to(_float_array(timestep).reshape(-1), (x.shape[0],))
        return paddle.to_tensor(self.predictor.run(x, timesteps, context))


class InferenceVAE(_Component):
    """``decoder`` / ``encoder`` may be None when an export left that graph out."""

    def __init__(self, decoder: GraphPredictor | None, encoder: GraphPredictor | None, config, network_class: type):
        super().__init__(config, network_class)
        self.decoder, self.encoder = decoder, encoder
        #: decode/encode large images in overlapping tiles, as ``AutoencoderKL.tiling``
        self.tiling: VAETiling | None = None

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def decode(self, latents) -> paddle.Tensor:
        if self.decoder is None:
            raise ValueError("this export has no vae_decoder graph")
        z = _float_array(latents)
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"VAE decode expects latents [B, {self.config.latent_channels}, h, w], got {list(z.shape)}")
        f = self.downscale_factor
        if self.tiling is not None and self.tiling.needed(z.shape[2] * f, z.shape[3] * f):
            return tiled_decode(self._decode_tile, paddle.to_tensor(z), f, self.tiling)
        return paddle.to_tensor(self.decoder.run(z))

    def encode(self, images) -> DiagonalGaussian:
        if self.encoder is None:
            raise ValueError("this export has no vae_encoder graph")
        x, f = _float_array(images), self.downscale_factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"VAE encode expects images [B, {self.config.in_channels}, H, W], got {list(x.shape)}")
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"image size {x.shape[3]}x{x.shape[2]} is not a multiple of {f}")
        if self.tiling is not None and self.tiling.needed(x.shape[2], x.shape[3]):
            return DiagonalGaussian(tiled_encode(self._encode_tile, paddle.to_tensor(x), f, self.tiling))
        return DiagonalGaussian(paddle.to_tensor(self.encoder.run(x)))

    def _decode_tile(self, z: paddle.Tensor) -> np.ndarray:
        return self.decoder.run(z.numpy())

    def _encode_tile(self, x: paddle.Tensor) -> np.ndarray:
        return self.encoder.run(x.numpy())


class InferenceTextEncoder(_Component):
    """``encode(input_ids, attention_mask=None)``, checked like ``TextEncoder.encode``.

    ``max_length``/``embedding_dim`` are the network class's own properties (they read only ``config``).
    ``clip_skip`` is refused: the graph holds the last layer's output only.
    """

    def __init__(self, predictor: GraphPredictor, config, network_class: type):
        super().__init__(config, network_class)
        self.predictor = predictor

    @property
    def max_length(self) -> int:
        return self.network_class.max_length.fget(self)

    @property
    def embedding_dim(self) -> int:
        return self.network_class.embedding_dim.fget(self)

    def encode(self, input_ids, attention_mask=None, *, clip_skip: int | None = None) -> paddle.Tensor:
        if clip_skip is not None:
            raise ValueError("clip_skip is not available on an exported text encoder (its graph returns the last "
                             "layer only); use the eager runtime for clip_skip")
        ids = token_ids(input_ids, vocab_size=self.config.vocab_size, max_length=self.max_length)
        mask = padding_mask(attention_mask, ids)
        mask = np.ones(ids.shape, np.int64) if mask is None else mask.astype("int64").numpy()
        return paddle.to_tensor(self.predictor.run(ids.numpy(), mask))

    def __call__(self, input_ids, attention_mask=None, clip_skip: int | None = None) -> paddle.Tensor:
        return self.encode(input_ids, attention_mask, clip_skip=clip_skip)
