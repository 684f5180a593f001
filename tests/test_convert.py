"""convert(): diffusers pipeline folders and single-file checkpoints -> Paddle pipeline folders; the CLI."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from stable_diffusion_chinese.models.unet import UNet2DConditionModel as PaddleUNet
from stable_diffusion_chinese.models.vae import AutoencoderKL as PaddleVAE
from stable_diffusion_chinese.text import CLIPTextEncoder
from stable_diffusion_chinese.weights import export_from
from stable_diffusion_chinese.weights.convert import ConversionError, convert, default_config
from stable_diffusion_chinese.weights.ldm_names import to_ldm_checkpoint
from stable_diffusion_chinese.weights.read import read_checkpoint

CONFIGS = Path(__file__).parent / "reference_configs"
REPO = Path(__file__).parent.parent
OURS = {"unet": PaddleUNet, "vae": PaddleVAE, "text_encoder": CLIPTextEncoder}


def _config(name):
    return json.loads((CONFIGS / name).read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny random diffusers pipeline folder and its torch models."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(_config("unet_tiny.json"))
    vae = AutoencoderKL.from_config(_config("vae_tiny.json"))
    clip = CLIPTextModel(CLIPTextConfig(**_config("clip_text_tiny.json"))).eval()
    with torch.no_grad():  # diffusers zero-initialises some layers; make every weight distinct
        for model in (unet, vae, clip):
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("pipeline")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    clip.save_pretrained(folder / "text_encoder")
    shutil.copytree(CONFIGS / "tokenizer_tiny_clip", folder / "tokenizer")
    DPMSolverMultistepScheduler().save_pretrained(folder / "scheduler")
    (folder / "feature_extractor").mkdir()
    (folder / "feature_extractor" / "preprocessor_config.json").write_text('{"crop_size": 224}')
    (folder / "safety_checker").mkdir()  # a network we do not convert: skipped, not copied
    torch.save({"w": torch.ones(1)}, folder / "safety_checker" / "pytorch_model.bin")
    (folder / "safety_checker" / "config.json").write_text("{}")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
             "feature_extractor": ["transformers", "CLIPImageProcessor"], "image_encoder": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    states = {"unet": {k: v.numpy() for k, v in unet.state_dict().items()},
              "vae": {k: v.numpy() for k, v in vae.state_dict().items()},
              "text_encoder": {"text_model." + k: v.numpy() for k, v in clip.state_dict().items()}}
    return {"folder": folder, "states": states, "clip": clip, "unet": unet, "vae": vae}


def _assert_weights_equal(out: Path, states):
    for component, cls in OURS.items():
        checkpoint = read_checkpoint(out / component)
        assert checkpoint.source.endswith("model.pdparams") and not checkpoint.torch_layout
        model = cls.from_pretrained(out / component)
        exported = export_from(model)
        assert set(exported) == set(states[component]), component
        for key, value in states[component].items():
            np.testing.assert_array_equal(exported[key], value, err_msg=f"{component}.{key}")


def test_convert_pipeline_folder(reference, tmp_path):
    source, out = reference["folder"], tmp_path / "paddle"
    summaries = convert(source, out)
    assert len(summaries) == 8 and any("safety_checker: skipped" in s for s in summaries)
    _assert_weights_equal(out, reference["states"])
    for component in OURS:
        assert json.loads((out / component / "config.json").read_text()) == \
               json.loads((source / component / "config.json").read_text())
    # Paddle layout on disk: Linear weights are [in, out]
    saved = read_checkpoint(out / "unet").tensors["time_embedding.linear_1.weight"]
    np.testing.assert_array_equal(saved, reference["states"]["unet"]["time_embedding.linear_1.weight"].T)
    for copied in ("tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
                   "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json"):
        assert (out / copied).read_bytes() == (source / copied).read_bytes()
    assert not (out / "safety_checker").exists()
    index = json.loads((out / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["_converted_to"] == "paddle"


def test_converted_text_encoder_matches_transformers(reference, tmp_path):
    out = tmp_path / "paddle"
    convert(reference["folder"], out)
    ids = np.random.default_rng(0).integers(0, 1000, size=(2, 77)).astype(np.int64)
    ours = CLIPTextEncoder.from_pretrained(out / "text_encoder").encode(ids).numpy()
    with torch.no_grad():
        want = reference["clip"](torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(ours, want, atol=2e-5, rtol=0)


def test_convert_one_model_folder(reference, tmp_path):
    """No model_index.json: the class comes from config.json (_class_name or architectures)."""
    for component, cls in OURS.items():
        out = tmp_path / component
        convert(reference["folder"] / component, out)
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.pdparams"]
        exported = export_from(cls.from_pretrained(out))
        for key, value in reference["states"][component].items():
            np.testing.assert_array_equal(exported[key], value, err_msg=f"{component}.{key}")
    with pytest.raises(ConversionError, match="neither model_index.json"):
        convert(reference["folder"] / "tokenizer", tmp_path / "tok")
    with pytest.raises(ConversionError, match="names class None"):
        convert(reference["folder"] / "safety_checker", tmp_path / "sc")


def test_convert_chinese_bert_pipeline(reference, tmp_path):
    """A Taiyi-style folder: BertModel text encoder; its pooler feeds no SD pipeline and is not kept."""
    from transformers import BertConfig, BertModel

    from stable_diffusion_chinese.text import BertTextEncoder

    source = tmp_path / "taiyi"
    shutil.copytree(reference["folder"], source)
    shutil.rmtree(source / "text_encoder")
    shutil.rmtree(source / "tokenizer")
    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=146, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=80)).eval()
    bert.save_pretrained(source / "text_encoder")
    shutil.copytree(CONFIGS / "tokenizer_tiny_bert", source / "tokenizer")
    index = json.loads((source / "model_index.json").read_text())
    index.update(text_encoder=["transformers", "BertModel"], tokenizer=["transformers", "BertTokenizer"])
    (source / "model_index.json").write_text(json.dumps(index))
    out = tmp_path / "paddle"
    convert(source, out)
    encoder = BertTextEncoder.from_pretrained(out / "text_encoder")
    exported = export_from(encoder)
    want = {k: v.numpy() for k, v in bert.state_dict().items() if not k.startswith("pooler.")}
    assert set(exported) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    ids = np.random.default_rng(1).integers(0, 146, size=(2, 16)).astype(np.int64)
    with torch.no_grad():
        reference_out = bert(torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(encoder.encode(ids).numpy(), reference_out, atol=2e-5, rtol=0)


def test_convert_single_file(reference, tmp_path):
    states = reference["states"]
    unet_config, vae_config = reference["unet"].config, reference["vae"].config
    ldm = to_ldm_checkpoint(states, unet_config, vae_config)
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ldm.items()}},
               tmp_path / "tiny.ckpt")
    out = tmp_path / "paddle"
    convert(tmp_path / "tiny.ckpt", out, unet_config=CONFIGS / "unet_tiny.json", vae_config=CONFIGS / "vae_tiny.json",
            text_encoder_config=CONFIGS / "clip_text_tiny.json", tokenizer=CONFIGS / "tokenizer_tiny_clip")
    _assert_weights_equal(out, states)
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text()) == default_config("scheduler")
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    index = json.loads((out / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["_converted_from"] == "tiny.ckpt"


def test_convert_single_file_without_tokenizer_writes_sd1_clip_tokenizer(reference, tmp_path):
    """No tokenizer given: SD 1.x's CLIP tokenizer (from the shipped merges) is written, and the folder loads as a
    pipeline whose prompt embeddings equal transformers' tokenizer + torch CLIP on the same folder."""
    from transformers import CLIPTokenizer as ReferenceClip

    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline
    from stable_diffusion_chinese.tokenizers import CLIPTokenizer

    text_config = {**_config("clip_text_tiny.json"), "vocab_size": 49408}  # SD 1.x's vocabulary, tiny width
    (tmp_path / "clip_text_49408.json").write_text(json.dumps(text_config))
    torch.manual_seed(2)
    clip = CLIPTextModel(CLIPTextConfig(**text_config)).eval()
    states = {**reference["states"], "text_encoder": {"text_model." + k: v.numpy() for k, v in clip.state_dict().items()}}
    ldm = to_ldm_checkpoint(states, reference["unet"].config, reference["vae"].config)
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ldm.items()}},
               tmp_path / "tiny.ckpt")
    out = tmp_path / "paddle"
    summaries = convert(tmp_path / "tiny.ckpt", out, unet_config=CONFIGS / "unet_tiny.json",
                        vae_config=CONFIGS / "vae_tiny.json", text_encoder_config=tmp_path / "clip_text_49408.json")
    assert "tokenizer: SD 1.x CLIP tokenizer (49,408 tokens) written from the shipped OpenAI merges" in summaries
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == ["merges.txt", "special_tokens_map.json",
                                                                     "tokenizer_config.json", "vocab.json"]
    assert json.loads((out / "model_index.json").read_text())["tokenizer"] == ["transformers", "CLIPTokenizer"]
    pipeline = StableDiffusionPipeline.from_pretrained(out)
    assert isinstance(pipeline.tokenizer, CLIPTokenizer) and pipeline.tokenizer.vocab_size == 49408
    prompts = ["a photo of a cat", "Ångström 🐱 masterpiece, trending on ArtStation"]
    ids = pipeline.tokenizer(prompts)["input_ids"]
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and ids.max() > 1000
    reference_ids = ReferenceClip.from_pretrained(out / "tokenizer")(prompts, padding="max_length", max_length=77,
                                                                      return_tensors="pt")["input_ids"]
    np.testing.assert_array_equal(ids, reference_ids.numpy())
    with torch.no_grad():
        want = clip(reference_ids).last_hidden_state.numpy()
    np.testing.assert_allclose(pipeline.text_encoder.encode(ids).numpy(), want, atol=2e-5, rtol=0)


def test_default_single_file_configs_are_sd15():
    for component, name in (("unet", "unet_sd15.json"), ("vae", "vae_sd15.json"),
                            ("text_encoder", "clip_text_sd15.json")):
        bookkeeping = ("_class_name", "architectures", "_use_default_values")
        shipped = {k: v for k, v in default_config(component).items() if k not in bookkeeping}
        assert shipped == {k: v for k, v in _config(name).items() if k not in bookkeeping}
    assert default_config("text_encoder")["architectures"] == ["CLIPTextModel"]
    assert default_config("unet")["_class_name"] == "UNet2DConditionModel"


def test_convert_refuses_bad_requests(reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConversionError, match="not empty"):
        convert(reference["folder"], out)
    with pytest.raises(ConversionError, match="--unet-config: for single-file checkpoints only"):
        convert(reference["folder"], tmp_path / "new", unet_config=CONFIGS / "unet_tiny.json")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        convert(tmp_path / "missing", tmp_path / "new")
    with pytest.raises(ConversionError, match="must not be the source or contain it"):
        convert(reference["folder"], reference["folder"].parent, overwrite=True)
    assert (reference["folder"] / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_conversion_leaves_no_output_and_overwrite_replaces(reference, tmp_path):
    ldm = to_ldm_checkpoint(reference["states"], reference["unet"].config, reference["vae"].config)
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ldm.items()}},
               tmp_path / "tiny.ckpt")
    tiny = {"unet_config": CONFIGS / "unet_tiny.json", "vae_config": CONFIGS / "vae_tiny.json"}
    out = tmp_path / "out"
    # unet and vae convert, then the 12-layer default CLIP config does not fit the 5-layer weights
    with pytest.raises(ValueError, match="missing keys"):
        convert(tmp_path / "tiny.ckpt", out, **tiny)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.ckpt"]
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="missing keys"):
        convert(tmp_path / "tiny.ckpt", out, overwrite=True, **tiny)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # untouched by the failure
    # a 1000-token text encoder cannot take SD 1.x's default tokenizer: refused before any work
    with pytest.raises(ConversionError, match="vocab_size 1000, fewer than the 49408 tokens of SD 1.x's CLIP "
                                              r"tokenizer used by default; pass the checkpoint's own tokenizer"):
        convert(tmp_path / "tiny.ckpt", out, overwrite=True, text_encoder_config=CONFIGS / "clip_text_tiny.json",
                **tiny)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    events = []
    convert(tmp_path / "tiny.ckpt", out, overwrite=True, text_encoder_config=CONFIGS / "clip_text_tiny.json",
            tokenizer=CONFIGS / "tokenizer_tiny_clip", progress=lambda *event: events.append(event), **tiny)
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "text_encoder", "tokenizer",
                                                     "unet", "vae"]
    assert events[0] == (0, 7, "read", None) and events[-1][:3] == (7, 7, "model_index.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.ckpt"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stable_diffusion_chinese", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def _error_line(result):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sd-chinese convert: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_converts_a_pipeline_folder(reference, tmp_path):
    out = tmp_path / "paddle"
    result = _cli("convert", reference["folder"], out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "unet: UNet2DConditionModel, 1,427,012 parameters" in result.stderr
    _assert_weights_equal(out, reference["states"])


def test_cli_bad_input_gives_one_line_errors(reference, tmp_path):
    assert "no such file or folder" in _error_line(_cli("convert", tmp_path / "missing", tmp_path / "o1"))
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": _RunsShell(marker)}}, tmp_path / "evil.ckpt")
    assert "posix.system" in _error_line(_cli("convert", tmp_path / "evil.ckpt", tmp_path / "o2"))
    assert not marker.exists()
    # tiny weights against the default SD 1.5 configs: the error names the keys that do not fit
    ldm = to_ldm_checkpoint(reference["states"], reference["unet"].config, reference["vae"].config)
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ldm.items()}},
               tmp_path / "tiny.ckpt")
    assert "fit no LDM name rule" in _error_line(_cli("convert", tmp_path / "tiny.ckpt", tmp_path / "o3"))
    # the SD 1.5 CLIP config (12 layers) for a 5-layer checkpoint: the strict loader names what is missing
    line = _error_line(_cli("convert", tmp_path / "tiny.ckpt", tmp_path / "o4", "--unet-config",
                            CONFIGS / "unet_tiny.json", "--vae-config", CONFIGS / "vae_tiny.json"))
    assert "(text_encoder) do not fit the model: missing keys (112): text_model.encoder.layers.10." in line


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)
