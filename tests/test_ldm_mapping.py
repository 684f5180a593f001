"""The LDM single-file name table, proved against diffusers' own converter (an independent implementation).

Tiny diffusers/transformers models -> LDM-named checkpoint (inverse of our table) -> diffusers'
``convert_ldm_*_checkpoint`` must give back the original state dicts exactly, and so must our
``split_ldm_checkpoint``. The same is done at full SD 1.5 size for names and shapes (meta tensors).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils
from safetensors.numpy import save_file as save_safetensors
from transformers import CLIPTextConfig, CLIPTextModel

from stable_diffusion_chinese.weights.errors import UnsupportedCheckpointError
from stable_diffusion_chinese.weights.ldm_names import split_ldm_checkpoint, to_ldm_checkpoint
from stable_diffusion_chinese.weights.read import read_checkpoint

CONFIGS = Path(__file__).parent / "reference_configs"


def _config(name):
    return json.loads((CONFIGS / name).read_text())


def _sd15_shaped_tiny():
    """SD 1.5's block layout (3 cross-attention down blocks + plain one, 2 layers) at tiny widths."""
    unet = dict(_config("unet_sd15.json"), block_out_channels=[32, 32, 64, 64], cross_attention_dim=32,
                attention_head_dim=8, sample_size=16)
    vae = dict(_config("vae_sd15.json"), block_out_channels=[32, 32, 64, 64], sample_size=32)
    return unet, vae


LAYOUTS = {"tiny": lambda: (_config("unet_tiny.json"), _config("vae_tiny.json")), "sd15_shaped": _sd15_shaped_tiny}


def _diffusers_components(layout, device="cpu"):
    unet_config, vae_config = LAYOUTS[layout]()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        clip = CLIPTextModel(CLIPTextConfig(**_config("clip_text_tiny.json")))
    return unet, vae, clip


def _state_dicts(unet, vae, clip, as_array):
    # SD checkpoints (and our CLIP encoder) name CLIP weights `text_model.*`; transformers 5 drops that level
    return {"unet": {k: as_array(v) for k, v in unet.state_dict().items()},
            "vae": {k: as_array(v) for k, v in vae.state_dict().items()},
            "text_encoder": {"text_model." + k: as_array(v) for k, v in clip.state_dict().items()}}


def _random_components(layout):
    """Random diffusers components with every parameter distinct, so a swapped name cannot go unnoticed."""
    unet, vae, clip = _diffusers_components(layout)
    rng = np.random.default_rng(0)
    originals = _state_dicts(unet, vae, clip, lambda t: rng.standard_normal(tuple(t.shape)).astype(np.float32))
    return unet.config, vae.config, originals


def _diffusers_split(ldm, unet_config, vae_config, as_torch=True):
    """diffusers' own single-file converter (on torch tensors, or on numpy arrays: it only renames and slices)."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ldm.items()} if as_torch else dict(ldm)
    return {"unet": single_file_utils.convert_ldm_unet_checkpoint(tensors, dict(unet_config)),
            "vae": single_file_utils.convert_ldm_vae_checkpoint(tensors, dict(vae_config)),
            "text_encoder": single_file_utils.convert_ldm_clip_checkpoint(tensors)}


def _assert_components_equal(got, want):
    assert set(got) == set(want)
    for component in want:
        assert set(got[component]) == set(want[component]), (
            component, sorted(set(got[component]) ^ set(want[component]))[:10])
        for key, value in want[component].items():
            other = got[component][key]
            other = other.numpy() if isinstance(other, torch.Tensor) else other
            assert other.shape == value.shape, (component, key)
            np.testing.assert_array_equal(other, value, err_msg=f"{component}.{key}")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_table_agrees_with_diffusers_converter(layout):
    unet_config, vae_config, originals = _random_components(layout)
    ldm = to_ldm_checkpoint(originals, unet_config, vae_config)
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."))
               for k in ldm)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # LDM stores a 1x1 conv
    _assert_components_equal(_diffusers_split(ldm, unet_config, vae_config), originals)
    _assert_components_equal(split_ldm_checkpoint(ldm, unet_config, vae_config), originals)


def test_full_size_sd15_names_and_shapes():
    """Full SD 1.5 configs on the meta device: zero-memory arrays carry the shapes."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_config("unet_sd15.json"))
        vae = AutoencoderKL.from_config(_config("vae_sd15.json"))
        clip = CLIPTextModel(CLIPTextConfig(**_config("clip_text_sd15.json")))
    zero = np.zeros((), np.float32)
    originals = _state_dicts(unet, vae, clip, lambda t: np.broadcast_to(zero, tuple(t.shape)))
    ldm = to_ldm_checkpoint(originals, unet.config, vae.config)
    counts = {p: sum(k.startswith(p) for k in ldm)
              for p in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")}
    # key counts of the released v1-5 single file (the CLIP part there also has the position_ids buffer)
    assert counts == {"model.diffusion_model.": 686, "first_stage_model.": 248, "cond_stage_model.": 196}
    for key in ("model.diffusion_model.input_blocks.3.0.op.weight",
                "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.2.1.conv.weight",
                "model.diffusion_model.output_blocks.5.2.conv.weight",
                "model.diffusion_model.output_blocks.8.2.conv.weight",
                "model.diffusion_model.out.2.weight",
                "first_stage_model.encoder.down.0.downsample.conv.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight",
                "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
                "first_stage_model.encoder.norm_out.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in ldm, key
    assert ldm["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"].shape == (128, 256, 1, 1)
    assert ldm["model.diffusion_model.output_blocks.2.1.conv.weight"].shape == (1280, 1280, 3, 3)
    for component, got in _diffusers_split(ldm, unet.config, vae.config, as_torch=False).items():
        assert {k: tuple(v.shape) for k, v in got.items()} == \
               {k: v.shape for k, v in originals[component].items()}, component
    ours = split_ldm_checkpoint(ldm, unet.config, vae.config)
    for component, got in ours.items():
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in originals[component].items()}


def test_full_size_split_fits_our_paddle_models():
    """SD 1.5 single-file names, split with the shipped default configs, are exactly our networks' parameters."""
    import paddle

    from stable_diffusion_chinese.weights.convert import SINGLE_FILE_CLASSES, default_config, network_class
    from stable_diffusion_chinese.weights.state_dict import linear_weight_keys

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_config("unet_sd15.json"))
        vae = AutoencoderKL.from_config(_config("vae_sd15.json"))
        clip = CLIPTextModel(CLIPTextConfig(**_config("clip_text_sd15.json")))
    zero = np.zeros((), np.float32)
    ldm = to_ldm_checkpoint(_state_dicts(unet, vae, clip, lambda t: np.broadcast_to(zero, tuple(t.shape))),
                            unet.config, vae.config)
    parts = split_ldm_checkpoint(ldm, default_config("unet"), default_config("vae"))
    for component, reference_class in SINGLE_FILE_CLASSES.items():
        with paddle.LazyGuard():  # shapes without allocating 1B parameters
            model = network_class(reference_class).from_config(default_config(component))
        linear = linear_weight_keys(model)
        ours = {k: tuple(v.shape)[::-1] if k in linear else tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in parts[component].items()} == ours, component


def test_files_written_by_safetensors_and_torch_save_read_back(tmp_path):
    unet_config, vae_config, originals = _random_components("tiny")
    ldm = to_ldm_checkpoint(originals, unet_config, vae_config)
    # what real checkpoints also carry: schedule buffers, EMA copies, the CLIP position_ids buffer
    extras = {"betas": np.linspace(0, 1, 10, dtype=np.float32), "model_ema.decay": np.ones((), np.float32),
              "cond_stage_model.transformer.text_model.embeddings.position_ids": np.arange(77)[None]}
    full = {**ldm, **extras}
    save_safetensors({k: np.ascontiguousarray(v) for k, v in full.items()}, str(tmp_path / "sd.safetensors"))
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in full.items()},
                "global_step": 470000}, tmp_path / "sd.ckpt")
    for name in ("sd.safetensors", "sd.ckpt"):
        checkpoint = read_checkpoint(tmp_path / name)
        assert set(checkpoint.tensors) == set(full)
        _assert_components_equal(split_ldm_checkpoint(checkpoint.tensors, unet_config, vae_config), originals)


def test_older_clip_layout_without_text_model():
    unet_config, vae_config, originals = _random_components("tiny")
    ldm = to_ldm_checkpoint(originals, unet_config, vae_config)
    prefix = "cond_stage_model.transformer.text_model."
    old = {k.replace(prefix, "cond_stage_model.transformer."): v for k, v in ldm.items()}
    assert not any(k.startswith(prefix) for k in old)
    _assert_components_equal(split_ldm_checkpoint(old, unet_config, vae_config), originals)


def test_unsupported_layouts_are_named():
    unet_config, vae_config, originals = _random_components("tiny")
    ldm = to_ldm_checkpoint(originals, unet_config, vae_config)
    openclip = {k: v for k, v in ldm.items() if not k.startswith("cond_stage_model.")}
    openclip["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = np.zeros((96, 32), np.float32)
    with pytest.raises(UnsupportedCheckpointError, match="SD 2.x OpenCLIP"):
        split_ldm_checkpoint(openclip, unet_config, vae_config)
    with pytest.raises(UnsupportedCheckpointError, match="no model.diffusion_model"):
        split_ldm_checkpoint(originals["unet"], unet_config, vae_config)
    stray = dict(ldm, **{"model.diffusion_model.input_blocks.9.0.in_layers.0.weight": np.zeros(1, np.float32)})
    with pytest.raises(UnsupportedCheckpointError, match=r"input_blocks\.9\.0\.in_layers\.0\.weight"):
        split_ldm_checkpoint(stray, unet_config, vae_config)
    # the SD 1.5 table does not fit a checkpoint with the tiny 2-block layout
    sd15_unet, sd15_vae = _config("unet_sd15.json"), _config("vae_sd15.json")
    with pytest.raises(UnsupportedCheckpointError, match="fit no LDM name rule"):
        split_ldm_checkpoint(ldm, sd15_unet, sd15_vae)
