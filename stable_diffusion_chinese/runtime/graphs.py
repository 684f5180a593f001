"""The four tensor-in/tensor-out networks that get exported, each a thin layer over an eager model.

Each wrapper calls the eager model's own forward code (nothing is re-implemented), taking plain
tensors so that ``paddle.jit.to_static`` can trace it with dynamic batch, token and image sizes
(``None`` dimensions of the ``InputSpec``). Input checks with Python control flow on values
(``AutoencoderKL.encode``'s size check, ``TextEncoder.encode``'s id range check) stay outside the graph:
the predictor-backed components of ``components.py`` run them before feeding the predictor.
"""
from __future__ import annotations

import dataclasses

import paddle
from paddle import nn
from paddle.static import InputSpec


@dataclasses.dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple
    dtype: str

    def spec(self) -> InputSpec:
        return InputSpec(list(self.shape), self.dtype, self.name)


class UNetGraph(nn.Layer):
    """``(sample [B, C, h, w], timestep [B], encoder_hidden_states [B, L, D]) -> noise prediction``."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states)

    @staticmethod
    def inputs(unet) -> list[GraphInput]:
        cfg = unet.config
        return [GraphInput("sample", (None, cfg.in_channels, None, None), "float32"),
                GraphInput("timestep", (None,), "float32"),
                GraphInput("encoder_hidden_states", (None, None, cfg.cross_attention_dim), "float32")]


class VAEDecoderGraph(nn.Layer):
    """``latents [B, c, h, w] (unscaled) -> images [B, 3, 8h, 8w]`` (post-quant conv + decoder)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode_latents(latents)

    @staticmethod
    def inputs(vae) -> list[GraphInput]:
        return [GraphInput("latents", (None, vae.config.latent_channels, None, None), "float32")]


class VAEEncoderGraph(nn.Layer):
    """``images [B, 3, H, W] in [-1, 1] -> posterior moments [B, 2c, H/8, W/8]`` (encoder + quant conv)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images):
        return self.vae.moments(images)

    @staticmethod
    def inputs(vae) -> list[GraphInput]:
        return [GraphInput("images", (None, vae.config.in_channels, None, None), "float32")]


class TextEncoderGraph(nn.Layer):
    """``(input_ids [B, L] int64, attention_mask [B, L] int64) -> embeddings [B, L, D]``.

    The mask is always an input; callers whose encoder takes none feed ones, which gives the same
    result (an all-true mask adds a zero bias: ``text/masks.py``).
    """

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids, attention_mask):
        return self.text_encoder(input_ids, attention_mask.astype("bool"), None)

    @staticmethod
    def inputs(text_encoder) -> list[GraphInput]:
        return [GraphInput("input_ids", (None, None), "int64"), GraphInput("attention_mask", (None, None), "int64")]


#: exported graph name -> (wrapper, which pipeline component it wraps)
GRAPHS = {
    "unet": (UNetGraph, "unet"),
    "vae_decoder": (VAEDecoderGraph, "vae"),
    "vae_encoder": (VAEEncoderGraph, "vae"),
    "text_encoder": (TextEncoderGraph, "text_encoder"),
}


def to_static(graph: nn.Layer, inputs: list[GraphInput]) -> nn.Layer:
    graph.eval()
    return paddle.jit.to_static(graph, input_spec=[i.spec() for i in inputs], full_graph=True)
