"""Original single-file Stable Diffusion 1.x checkpoints (LDM/CompVis names) <-> diffusers names.

One data table, built from the UNet and VAE configs: each row maps an LDM name prefix to a component
and a diffusers name prefix. A key is renamed by its longest matching row; keys under a component's LDM
prefix that match no row are errors, never silently dropped.

Where the facts come from (read, not copied):
- diffusers 0.42.1 ``loaders/single_file_utils.py``: ``DIFFUSERS_TO_LDM_MAPPING``,
  ``convert_ldm_unet_checkpoint`` (input_blocks index = 1 + block * (layers_per_block + 1) + layer;
  ``*.0.op`` downsamplers; output_blocks upsampler at ``.1.conv`` or ``.2.conv`` after an attention;
  ResBlock parts in_layers.0/2, emb_layers.1, out_layers.0/3, skip_connection), ``convert_ldm_vae_checkpoint``
  (decoder ``up.{n-1-i}`` is diffusers ``up_blocks.{i}``; ``nin_shortcut``; ``mid.attn_1.{norm,q,k,v,proj_out}``
  stored as 1x1 convs and squeezed to Linear by ``conv_attn_to_linear``), ``convert_ldm_clip_checkpoint``
  (``cond_stage_model.transformer.`` prefix), ``convert_open_clip_checkpoint`` (SD2 ``cond_stage_model.model.``).
- stable-diffusion.cpp ``name_conversion.cpp``: the same UNet/VAE prefix tables written as data, and the
  older CLIP layout ``cond_stage_model.transformer.*`` without ``text_model``.
- CompVis ``ldm/modules/diffusionmodules/openaimodel.py`` / ``model.py`` naming (time_embed.0/2, out.0/2,
  encoder.norm_out).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from .errors import UnsupportedCheckpointError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
COMPONENTS = ("unet", "vae", "text_encoder")
# Under a component prefix but not weights of the inference model: the VAE training loss (discriminator, LPIPS).
IGNORED_PREFIXES = (VAE_PREFIX + "loss.",)

# ResBlock parts: LDM name -> diffusers ResnetBlock2D name
UNET_RESNET_PARTS = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
                     "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}
VAE_RESNET_PARTS = {"norm1.": "norm1.", "conv1.": "conv1.", "norm2.": "norm2.", "conv2.": "conv2.",
                    "nin_shortcut.": "conv_shortcut."}
# VAE mid-block attention parts; q/k/v/proj_out are 1x1 convs in LDM and Linear in diffusers
VAE_ATTENTION_PARTS = {"norm.": ("group_norm.", False), "q.": ("to_q.", True), "k.": ("to_k.", True),
                       "v.": ("to_v.", True), "proj_out.": ("to_out.0.", True)}
UNET_DOWN_TYPES = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}  # block type -> has attention
UNET_UP_TYPES = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
SUPPORTED_MID_BLOCKS = ("UNetMidBlock2DCrossAttn",)


@dataclasses.dataclass(frozen=True)
class NameRule:
    """``ldm`` prefix -> ``diffusers`` prefix of ``component``; ``diffusers`` None drops the key (a buffer)."""

    ldm: str
    component: str
    diffusers: str | None
    conv_to_linear: bool = False  # 1x1 conv weight [C, C, 1, 1] in LDM, Linear [C, C] in diffusers


def _rule(ldm: str, component: str, diffusers: str | None, conv_to_linear: bool = False) -> NameRule:
    return NameRule(ldm, component, diffusers, conv_to_linear)


# ---------------------------------------------------------------- UNet

def _unet_resnet(ldm: str, diffusers: str) -> list[NameRule]:
    return [_rule(UNET_PREFIX + ldm + a, "unet", diffusers + b) for a, b in UNET_RESNET_PARTS.items()]


def _per_block(value: Any, count: int, name: str) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count:
        raise ValueError(f"UNet config {name} has {len(values)} entries for {count} blocks")
    return [int(v) for v in values]


def _block_attention(types: list[str], table: Mapping[str, bool], kind: str) -> list[bool]:
    unknown = [t for t in types if t not in table]
    if unknown:
        raise UnsupportedCheckpointError(f"single-file mapping supports {kind} block types {list(table)}, "
                                         f"not {unknown}")
    return [table[t] for t in types]


def unet_rules(config: Mapping[str, Any]) -> list[NameRule]:
    """input_blocks/middle_block/output_blocks -> down_blocks/mid_block/up_blocks, from the block layout."""
    down_attn = _block_attention(list(config["down_block_types"]), UNET_DOWN_TYPES, "UNet down")
    up_attn = _block_attention(list(config["up_block_types"]), UNET_UP_TYPES, "UNet up")
    n = len(down_attn)
    if len(up_attn) != n:
        raise ValueError(f"UNet config has {n} down blocks but {len(up_attn)} up blocks")
    layers = _per_block(config.get("layers_per_block", 2), n, "layers_per_block")
    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type not in SUPPORTED_MID_BLOCKS:
        raise UnsupportedCheckpointError(f"single-file mapping supports mid_block_type {SUPPORTED_MID_BLOCKS}, "
                                         f"not {mid_type!r}")
    u = UNET_PREFIX
    rules = [_rule(u + "time_embed.0.", "unet", "time_embedding.linear_1."),
             _rule(u + "time_embed.2.", "unet", "time_embedding.linear_2."),
             _rule(u + "input_blocks.0.0.", "unet", "conv_in."),
             _rule(u + "out.0.", "unet", "conv_norm_out."),
             _rule(u + "out.2.", "unet", "conv_out.")]
    index = 1
    for b in range(n):
        for j in range(layers[b]):
            rules += _unet_resnet(f"input_blocks.{index}.0.", f"down_blocks.{b}.resnets.{j}.")
            if down_attn[b]:
                rules.append(_rule(u + f"input_blocks.{index}.1.", "unet", f"down_blocks.{b}.attentions.{j}."))
            index += 1
        if b < n - 1:
            rules.append(_rule(u + f"input_blocks.{index}.0.op.", "unet", f"down_blocks.{b}.downsamplers.0.conv."))
            index += 1
    rules += _unet_resnet("middle_block.0.", "mid_block.resnets.0.")
    rules.append(_rule(u + "middle_block.1.", "unet", "mid_block.attentions.0."))
    rules += _unet_resnet("middle_block.2.", "mid_block.resnets.1.")
    index = 0
    up_layers = layers[::-1]
    for b in range(n):
        for j in range(up_layers[b] + 1):
            rules += _unet_resnet(f"output_blocks.{index}.0.", f"up_blocks.{b}.resnets.{j}.")
            if up_attn[b]:
                rules.append(_rule(u + f"output_blocks.{index}.1.", "unet", f"up_blocks.{b}.attentions.{j}."))
            if j == up_layers[b] and b < n - 1:
                slot = 2 if up_attn[b] else 1
                rules.append(_rule(u + f"output_blocks.{index}.{slot}.conv.", "unet",
                                   f"up_blocks.{b}.upsamplers.0.conv."))
            index += 1
    return rules


# ---------------------------------------------------------------- VAE

def _vae_resnet(ldm: str, diffusers: str) -> list[NameRule]:
    return [_rule(VAE_PREFIX + ldm + a, "vae", diffusers + b) for a, b in VAE_RESNET_PARTS.items()]


def _vae_mid(side: str) -> list[NameRule]:
    rules = _vae_resnet(f"{side}.mid.block_1.", f"{side}.mid_block.resnets.0.")
    rules += _vae_resnet(f"{side}.mid.block_2.", f"{side}.mid_block.resnets.1.")
    for part, (name, conv) in VAE_ATTENTION_PARTS.items():
        rules.append(_rule(VAE_PREFIX + f"{side}.mid.attn_1.{part}", "vae",
                           f"{side}.mid_block.attentions.0.{name}", conv))
    return rules


def vae_rules(config: Mapping[str, Any]) -> list[NameRule]:
    """encoder.down / decoder.up (reversed) / mid -> diffusers AutoencoderKL names."""
    n = len(config["block_out_channels"])
    layers = int(config.get("layers_per_block", 2))
    if not config.get("mid_block_add_attention", True):
        raise UnsupportedCheckpointError("single-file mapping expects a VAE mid-block attention "
                                         "(mid_block_add_attention=False is not supported)")
    v = VAE_PREFIX
    rules = []
    for side in ("encoder", "decoder"):
        rules += [_rule(v + f"{side}.conv_in.", "vae", f"{side}.conv_in."),
                  _rule(v + f"{side}.norm_out.", "vae", f"{side}.conv_norm_out."),
                  _rule(v + f"{side}.conv_out.", "vae", f"{side}.conv_out.")]
        rules += _vae_mid(side)
    for i in range(n):
        rules += [r for j in range(layers) for r in
                  _vae_resnet(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.")]
        if i < n - 1:
            rules.append(_rule(v + f"encoder.down.{i}.downsample.conv.", "vae",
                               f"encoder.down_blocks.{i}.downsamplers.0.conv."))
    for i in range(n):
        ldm_i = n - 1 - i  # LDM numbers decoder levels from the lowest resolution up, diffusers the other way
        rules += [r for j in range(layers + 1) for r in
                  _vae_resnet(f"decoder.up.{ldm_i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")]
        if i < n - 1:
            rules.append(_rule(v + f"decoder.up.{ldm_i}.upsample.conv.", "vae",
                               f"decoder.up_blocks.{i}.upsamplers.0.conv."))
    rules += [_rule(v + "quant_conv.", "vae", "quant_conv."),
              _rule(v + "post_quant_conv.", "vae", "post_quant_conv.")]
    return rules


# ---------------------------------------------------------------- CLIP text encoder (SD 1.x)

CLIP_RULES = [
    _rule(CLIP_PREFIX + "text_model.", "text_encoder", "text_model."),
    # older transformers CLIPTextModel had no `text_model` level
    _rule(CLIP_PREFIX, "text_encoder", "text_model."),
    # position_ids is a buffer (arange over positions), not a weight
    _rule(CLIP_PREFIX + "text_model.embeddings.position_ids", "text_encoder", None),
    _rule(CLIP_PREFIX + "embeddings.position_ids", "text_encoder", None),
]


def ldm_name_table(unet_config: Mapping[str, Any], vae_config: Mapping[str, Any]) -> dict[str, NameRule]:
    """The whole table, keyed by LDM prefix (or full key for the dropped buffers)."""
    rules = unet_rules(unet_config) + vae_rules(vae_config) + CLIP_RULES
    table: dict[str, NameRule] = {}
    for rule in rules:
        if rule.ldm in table:
            raise AssertionError(f"duplicate LDM name rule {rule.ldm}")
        table[rule.ldm] = rule
    return table


# ---------------------------------------------------------------- applying the table

# Text encoders in single files that this table does not map, recognised by a key they always have.
UNSUPPORTED_TEXT_ENCODERS = {
    "cond_stage_model.model.": "an SD 2.x OpenCLIP text encoder (cond_stage_model.model.*)",
    "conditioner.embedders.": "an SDXL checkpoint (conditioner.embedders.*)",
    CLIP_PREFIX + "embeddings.word_embeddings.": "a BERT-style text encoder (word_embeddings), not CLIP",
    CLIP_PREFIX + "bert.": "a BERT-style text encoder (cond_stage_model.transformer.bert.*), not CLIP",
    CLIP_PREFIX + "roberta.": "a RoBERTa text encoder (cond_stage_model.transformer.roberta.*), not CLIP",
}


def check_supported(keys) -> None:
    """Refuse single-file layouts the table does not cover, with a message that names them."""
    keys = list(keys)
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        raise UnsupportedCheckpointError(f"not an original (LDM) Stable Diffusion checkpoint: no {UNET_PREFIX}* keys")
    for marker, what in UNSUPPORTED_TEXT_ENCODERS.items():
        if any(k.startswith(marker) for k in keys):
            raise UnsupportedCheckpointError(f"this single-file checkpoint has {what}; only SD 1.x checkpoints "
                                             "with a CLIP text encoder are supported so far")


def _match(key: str, table: Mapping[str, NameRule]) -> NameRule | None:
    """Longest row whose LDM prefix starts ``key`` (or equals it, for whole-key rows)."""
    if key in table:
        return table[key]
    end = key.rfind(".")
    while end > 0:
        rule = table.get(key[: end + 1])
        if rule is not None:
            return rule
        end = key.rfind(".", 0, end)
    return None


def _squeeze_conv(key: str, array: np.ndarray) -> np.ndarray:
    if array.ndim > 2:
        if any(d != 1 for d in array.shape[2:]):
            raise ValueError(f"{key}: expected a 1x1 conv weight, got shape {list(array.shape)}")
        return array.reshape(array.shape[:2])
    return array


def split_ldm_checkpoint(tensors: Mapping[str, np.ndarray], unet_config: Mapping[str, Any],
                         vae_config: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Split an LDM single-file state dict into ``{"unet", "vae", "text_encoder"}`` diffusers state dicts.

    Keys outside the three component prefixes (noise-schedule buffers, ``model_ema.*``, optimizer state)
    are not weights of the inference pipeline and are left out.
    """
    check_supported(tensors)
    table = ldm_name_table(unet_config, vae_config)
    out: dict[str, dict[str, np.ndarray]] = {c: {} for c in COMPONENTS}
    unknown = []
    for key, array in tensors.items():
        if not key.startswith((UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)) or key.startswith(IGNORED_PREFIXES):
            continue
        rule = _match(key, table)
        if rule is None:
            unknown.append(key)
        elif rule.diffusers is not None:
            name = rule.diffusers + key[len(rule.ldm):]
            out[rule.component][name] = _squeeze_conv(key, array) if rule.conv_to_linear else array
    if unknown:
        raise UnsupportedCheckpointError(
            f"{len(unknown)} keys of the single-file checkpoint fit no LDM name rule for the given UNet/VAE "
            f"configs (wrong config, or a model variant we do not map): {', '.join(sorted(unknown)[:20])}")
    return out


def to_ldm_checkpoint(components: Mapping[str, Mapping[str, np.ndarray]], unet_config: Mapping[str, Any],
                      vae_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of ``split_ldm_checkpoint``: diffusers component state dicts -> one LDM state dict."""
    reverse: dict[tuple[str, str], NameRule] = {}
    for rule in ldm_name_table(unet_config, vae_config).values():
        if rule.diffusers is not None:
            reverse.setdefault((rule.component, rule.diffusers), rule)  # first row is the canonical one
    out: dict[str, np.ndarray] = {}
    for component, state in components.items():
        rows = {d: r for (c, d), r in reverse.items() if c == component}
        for key, array in state.items():
            rule = _match(key, rows)
            if rule is None:
                raise ValueError(f"{component} key {key} has no LDM name")
            name = rule.ldm + key[len(rule.diffusers):]
            if rule.conv_to_linear and array.ndim == 2:
                array = array.reshape(array.shape + (1, 1))
            out[name] = array
    return out
