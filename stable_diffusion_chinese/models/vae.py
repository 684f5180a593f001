"""AutoencoderKL (Rombach et al. 2022): images <-> latents, configured by a diffusers ``config.json``."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..config import ModelConfig, UnsupportedConfigError
from .pretrained import PretrainedLayer
from .resnet import Downsample2D, ResnetBlock2D, Upsample2D
from .transformer import Attention
from .vae_tiling import VAETiling, tiled_decode, tiled_encode

VAE_EPS = 1e-6  # diffusers' Encoder/Decoder fix the ResNet and attention GroupNorm epsilon at 1e-6


@dataclasses.dataclass
class VAEConfig(ModelConfig):
    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple = ("UpDecoderBlock2D",) * 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512
    scaling_factor: float = 0.18215
    shift_factor: Any = None
    latents_mean: Any = None
    latents_std: Any = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def validate(self, raw: Mapping[str, Any]) -> None:
        self.require(raw, "act_fn", ["silu"])
        for name in self.down_block_types:
            self.require({"down_block_types": name}, "down_block_types", ["DownEncoderBlock2D"])
        for name in self.up_block_types:
            self.require({"up_block_types": name}, "up_block_types", ["UpDecoderBlock2D"])
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (list, tuple)) or len(value) != self.latent_channels):
                raise UnsupportedConfigError(f"VAE config {name} must list one number per latent channel "
                                             f"({self.latent_channels}), got {value!r}")
        if (self.latents_mean is None) != (self.latents_std is None):
            raise UnsupportedConfigError("VAE config sets only one of latents_mean / latents_std; give both or neither")


def to_diffusion_latents(config: VAEConfig, z: paddle.Tensor) -> paddle.Tensor:
    """VAE latents -> the space the UNet works in.

    diffusers' rules: SD 1.x/2.x ``z * scaling_factor``; SD3/Flux ``(z - shift_factor) * scaling_factor``;
    SDXL pipelines, when the VAE config lists ``latents_mean``/``latents_std`` (per channel),
    ``(z - mean) * scaling_factor / std``. The embedded model uses the per-channel form: its VAE's
    channels have means of up to 1.5 and spreads of ~0.25, so one scalar scale left the image content
    at a quarter of the noise's scale (docs/embedded_model.md).
    """
    if config.latents_mean is not None:
        mean, std = _per_channel(config.latents_mean), _per_channel(config.latents_std)
        return (z - mean) * config.scaling_factor / std
    return (z - (config.shift_factor or 0.0)) * config.scaling_factor


def from_diffusion_latents(config: VAEConfig, latents: paddle.Tensor) -> paddle.Tensor:
    """The inverse of ``to_diffusion_latents``: what ``vae.decode`` takes."""
    if config.latents_mean is not None:
        mean, std = _per_channel(config.latents_mean), _per_channel(config.latents_std)
        return latents * std / config.scaling_factor + mean
    return latents / config.scaling_factor + (config.shift_factor or 0.0)


def _per_channel(values) -> paddle.Tensor:
    return paddle.to_tensor(np.asarray(values, np.float32).reshape(1, -1, 1, 1))


class VAEMidBlock(nn.Layer):
    def __init__(self, ch: int, groups: int, add_attention: bool):
        super().__init__()
        self.resnets = nn.LayerList([ResnetBlock2D(ch, ch, None, groups, VAE_EPS) for _ in range(2)])
        # one head as wide as the block (diffusers: attention_head_dim = channels)
        self.attentions = nn.LayerList(
            [Attention(ch, 1, ch, qkv_bias=True, norm_groups=groups, norm_eps=VAE_EPS)] if add_attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class EncoderBlock(nn.Layer):
    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = nn.LayerList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, None, groups, VAE_EPS) for i in range(layers)])
        self.downsamplers = nn.LayerList([Downsample2D(out_ch, padding=0)] if downsample else [])

    def forward(self, x):
        for layer in list(self.resnets) + list(self.downsamplers):
            x = layer(x)
        return x


class DecoderBlock(nn.Layer):
    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.LayerList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, None, groups, VAE_EPS) for i in range(layers)])
        self.upsamplers = nn.LayerList([Upsample2D(out_ch)] if upsample else [])

    def forward(self, x):
        for layer in list(self.resnets) + list(self.upsamplers):
            x = layer(x)
        return x


class Encoder(nn.Layer):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, last = list(cfg.block_out_channels), cfg.norm_num_groups, len(cfg.block_out_channels) - 1
        self.conv_in = nn.Conv2D(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.LayerList([EncoderBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, groups, i < last)
                                         for i in range(len(ch))])
        self.mid_block = VAEMidBlock(ch[-1], groups, cfg.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], epsilon=VAE_EPS)
        self.conv_out = nn.Conv2D(ch[-1], 2 * cfg.latent_channels, 3, padding=1)  # mean and log-variance

    def forward(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Layer):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, last = list(cfg.block_out_channels)[::-1], cfg.norm_num_groups, len(cfg.block_out_channels) - 1
        self.conv_in = nn.Conv2D(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = VAEMidBlock(ch[0], groups, cfg.mid_block_add_attention)
        self.up_blocks = nn.LayerList([DecoderBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, groups, i < last)
                                       for i in range(len(ch))])
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], epsilon=VAE_EPS)
        self.conv_out = nn.Conv2D(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)); log-variance clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: paddle.Tensor):
        self.mean, logvar = moments.chunk(2, axis=1)
        self.logvar = paddle.clip(logvar, -30.0, 20.0)
        self.std = paddle.exp(0.5 * self.logvar)

    def sample(self, noise) -> paddle.Tensor:
        """``mean + std * noise``; the caller supplies the noise so sampling is reproducible across frameworks."""
        noise = noise if isinstance(noise, paddle.Tensor) else paddle.to_tensor(np.asarray(noise, np.float32))
        if list(noise.shape) != list(self.mean.shape):
            raise ValueError(f"noise shape {list(noise.shape)} does not match latents {list(self.mean.shape)}")
        return self.mean + self.std * noise

    def mode(self) -> paddle.Tensor:
        return self.mean

    def kl(self) -> paddle.Tensor:
        """KL divergence to N(0, I) per sample, summed over latent elements."""
        return 0.5 * paddle.sum(self.mean ** 2 + self.std ** 2 - 1.0 - self.logvar, axis=[1, 2, 3])


class AutoencoderKL(PretrainedLayer):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        latent = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2D(2 * latent, 2 * latent, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2D(latent, latent, 1) if config.use_post_quant_conv else None
        #: decode/encode large images in overlapping tiles (``vae_tiling``); None = whole images
        self.tiling: VAETiling | None = None

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode(self, images) -> DiagonalGaussian:
        """Images in [-1, 1], [B, C, H, W] with H and W multiples of the downscale factor."""
        x = _images(images, self.config.in_channels, self.downscale_factor)
        if self.tiling is not None and self.tiling.needed(x.shape[2], x.shape[3]):
            return DiagonalGaussian(tiled_encode(self.moments, x, self.downscale_factor, self.tiling))
        return DiagonalGaussian(self.moments(x))

    def moments(self, x: paddle.Tensor) -> paddle.Tensor:
        """Encoder + quant conv: posterior mean and log-variance stacked on the channel axis."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments

    def decode(self, latents) -> paddle.Tensor:
        """Unscaled latents [B, latent_channels, h, w] -> images in about [-1, 1]."""
        z = latents if isinstance(latents, paddle.Tensor) else paddle.to_tensor(np.asarray(latents, np.float32))
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"VAE decode expects latents [B, {self.config.latent_channels}, h, w], got {list(z.shape)}")
        f = self.downscale_factor
        if self.tiling is not None and self.tiling.needed(z.shape[2] * f, z.shape[3] * f):
            return tiled_decode(self.decode_latents, z, f, self.tiling)
        return self.decode_latents(z)

    def decode_latents(self, z: paddle.Tensor) -> paddle.Tensor:
        """Post-quant conv + decoder on a checked latent tensor."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, images, noise) -> paddle.Tensor:
        return self.decode(self.encode(images).sample(noise))


def _images(images, channels: int, factor: int) -> paddle.Tensor:
    x = images if isinstance(images, paddle.Tensor) else paddle.to_tensor(np.asarray(images, np.float32))
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"VAE encode expects images [B, {channels}, H, W], got {list(x.shape)}")
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"image size {x.shape[3]}x{x.shape[2]} is not a multiple of {factor}")
    return x
