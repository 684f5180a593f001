"""The Stable Diffusion 1.x/2.x conditional UNet, configured by a diffusers ``config.json``."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..config import ModelConfig, UnsupportedConfigError
from .embeddings import TimestepEmbedding, timestep_features
from .pretrained import PretrainedLayer
from .resnet import Downsample2D, ResnetBlock2D, Upsample2D
from .transformer import Transformer2DModel

DOWN_BLOCKS = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}  # name -> has cross-attention
UP_BLOCKS = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}

# diffusers options this UNet does not implement, with the only value it accepts (SD 1.x/2.x use these)
FIXED_OPTIONS = {
    "act_fn": "silu", "resnet_time_scale_shift": "default", "time_embedding_type": "positional",
    "mid_block_type": "UNetMidBlock2DCrossAttn", "class_embed_type": None, "addition_embed_type": None,
    "time_cond_proj_dim": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "only_cross_attention": False, "dual_cross_attention": False, "num_attention_heads": None,
    "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False, "attention_type": "default",
    "timestep_post_act": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
    "cross_attention_norm": None, "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
    "reverse_transformer_layers_per_block": None, "num_class_embeds": None,
}


@dataclasses.dataclass
class UNetConfig(ModelConfig):
    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 768
    #: heads per block (diffusers' historical name: in SD 1.x "8" means 8 heads of width C/8)
    attention_head_dim: Any = 8
    transformer_layers_per_block: Any = 1
    use_linear_projection: bool = False
    upcast_attention: bool = False  # we compute attention in fp32 anyway
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3

    def per_block(self, value) -> tuple:
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * len(self.block_out_channels)

    def validate(self, raw: Mapping[str, Any]) -> None:
        for key, allowed in FIXED_OPTIONS.items():
            self.require(raw, key, [allowed])
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise UnsupportedConfigError("down_block_types, up_block_types and block_out_channels differ in length")
        for name in self.down_block_types:
            self.require({"down_block_types": name}, "down_block_types", list(DOWN_BLOCKS))
        for name in self.up_block_types:
            self.require({"up_block_types": name}, "up_block_types", list(UP_BLOCKS))
        for key in ("layers_per_block", "cross_attention_dim"):
            if not isinstance(getattr(self, key), int):
                raise UnsupportedConfigError(f"config option {key} must be one integer for this UNet")
        for key in ("attention_head_dim", "transformer_layers_per_block"):
            if len(self.per_block(getattr(self, key))) != n:
                raise UnsupportedConfigError(f"config option {key} needs one value per block ({n})")


class DownBlock(nn.Layer):
    def __init__(self, in_ch: int, out_ch: int, temb: int, cfg: UNetConfig, heads: int, depth: int,
                 attention: bool, downsample: bool):
        super().__init__()
        n = cfg.layers_per_block
        self.resnets = nn.LayerList([ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, temb, cfg.norm_num_groups,
                                                   cfg.norm_eps) for i in range(n)])
        self.attentions = nn.LayerList([_transformer(out_ch, heads, depth, cfg) for _ in range(n)] if attention else [])
        self.downsamplers = nn.LayerList([Downsample2D(out_ch, cfg.downsample_padding)] if downsample else [])

    def forward(self, x, temb, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[i](x, context)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Layer):
    def __init__(self, in_ch: int, prev_ch: int, out_ch: int, temb: int, cfg: UNetConfig, heads: int, depth: int,
                 attention: bool, upsample: bool):
        super().__init__()
        n = cfg.layers_per_block + 1
        # resnet i sees the previous output (or this block's width) concatenated with a skip connection:
        # the last skip of each down block comes from that block's input width.
        self.resnets = nn.LayerList([
            ResnetBlock2D((prev_ch if i == 0 else out_ch) + (in_ch if i == n - 1 else out_ch), out_ch, temb,
                          cfg.norm_num_groups, cfg.norm_eps) for i in range(n)])
        self.attentions = nn.LayerList([_transformer(out_ch, heads, depth, cfg) for _ in range(n)] if attention else [])
        self.upsamplers = nn.LayerList([Upsample2D(out_ch)] if upsample else [])

    def forward(self, x, skips, temb, context, upsample_size=None):
        for i, resnet in enumerate(self.resnets):
            x = resnet(paddle.concat([x, skips.pop()], axis=1), temb)
            if len(self.attentions):
                x = self.attentions[i](x, context)
        for up in self.upsamplers:
            x = up(x, upsample_size)
        return x


class MidBlock(nn.Layer):
    def __init__(self, ch: int, temb: int, cfg: UNetConfig, heads: int, depth: int):
        super().__init__()
        make = lambda: ResnetBlock2D(ch, ch, temb, cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor)
        self.resnets = nn.LayerList([make(), make()])
        self.attentions = nn.LayerList([_transformer(ch, heads, depth, cfg)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


def _transformer(channels: int, heads: int, depth: int, cfg: UNetConfig) -> Transformer2DModel:
    return Transformer2DModel(channels, heads, cfg.cross_attention_dim, cfg.norm_num_groups, depth,
                              cfg.use_linear_projection)


class UNet2DConditionModel(PretrainedLayer):
    """Predicts the noise (or v) in ``sample`` at ``timestep`` given text embeddings ``encoder_hidden_states``.

    9 input channels (latents + mask + masked-image latents) make the inpainting variant; nothing
    else changes.
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        cfg = config
        channels = list(cfg.block_out_channels)
        heads = cfg.per_block(cfg.attention_head_dim)
        depth = cfg.per_block(cfg.transformer_layers_per_block)
        temb = channels[0] * 4
        last = len(channels) - 1

        self.conv_in = nn.Conv2D(cfg.in_channels, channels[0], cfg.conv_in_kernel, padding=cfg.conv_in_kernel // 2)
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.down_blocks = nn.LayerList([
            DownBlock(channels[max(i - 1, 0)], channels[i], temb, cfg, heads[i], depth[i],
                      DOWN_BLOCKS[kind], downsample=i < last)
            for i, kind in enumerate(cfg.down_block_types)])
        self.mid_block = MidBlock(channels[-1], temb, cfg, heads[-1], depth[-1])
        up_channels, up_heads, up_depth = channels[::-1], heads[::-1], depth[::-1]
        self.up_blocks = nn.LayerList([
            UpBlock(up_channels[min(i + 1, last)], up_channels[max(i - 1, 0)], up_channels[i], temb, cfg,
                    up_heads[i], up_depth[i], UP_BLOCKS[kind], upsample=i < last)
            for i, kind in enumerate(cfg.up_block_types)])
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, channels[0], epsilon=cfg.norm_eps)
        self.conv_out = nn.Conv2D(channels[0], cfg.out_channels, cfg.conv_out_kernel,
                                  padding=cfg.conv_out_kernel // 2)

    def forward(self, sample, timestep, encoder_hidden_states) -> paddle.Tensor:
        sample = _tensor(sample, "float32")
        context = _tensor(encoder_hidden_states, "float32")
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet expects latents [B, {self.config.in_channels}, H, W], got {list(sample.shape)}")
        if context.ndim != 3 or context.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(f"UNet expects text embeddings [B, L, {self.config.cross_attention_dim}], "
                             f"got {list(context.shape)}")
        batch = sample.shape[0]
        timesteps = _tensor(timestep, "float32").reshape([-1]).expand([batch])
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        temb = self.time_embedding(timestep_features(timesteps, self.config.block_out_channels[0],
                                                     self.config.flip_sin_to_cos, self.config.freq_shift))

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context)
            skips += block_skips
        x = self.mid_block(x, temb, context)
        for block in self.up_blocks:
            own = skips[-len(block.resnets):]
            del skips[-len(block.resnets):]
            # upsample to the next skip's size, so latents whose side is not a multiple of 2^n still line up
            target = tuple(skips[-1].shape[2:]) if skips and len(block.upsamplers) else None
            x = block(x, own, temb, context, target)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def _tensor(value, dtype: str) -> paddle.Tensor:
    # paddle.pir.Value: a tensor of a static program being traced (paddle.jit.to_static, runtime.export)
    if isinstance(value, (paddle.Tensor, paddle.pir.Value)):
        return value.astype(dtype) if value.dtype != getattr(paddle, dtype) else value
    return paddle.to_tensor(np.asarray(value, dtype=dtype))
