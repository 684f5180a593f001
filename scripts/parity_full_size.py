"""Full-size parity: SD1.5 UNet, VAE, CLIP text encoder, Taiyi BERT and AltDiffusion's XLM-R text encoder.

Each component is built at real size with the same random weights in the PyTorch reference
(diffusers/transformers) and in our Paddle engine, fed identical numpy inputs, and compared.
Prints max-abs and relative (max-abs / max|reference|) difference and the seconds each framework took.
Not a CI test: needs ~12 GB of memory and several minutes on 2 cores.

    python scripts/parity_full_size.py [--only unet,vae_decode,...]
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import paddle
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "tests" / "reference_configs"

# XLM-R large + 1024 -> 768 projection, AltDiffusion's text encoder (BAAI/AltDiffusion-m9 text_encoder/config.json)
ALT_TEXT = dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, project_dim=768, has_pre_transformation=True,
                hidden_act="gelu")


def config(name: str) -> dict:
    values = json.loads((CONFIGS / name).read_text())
    values.pop("_use_default_values", None)
    return values


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def state_of(module) -> dict:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def compare(name, ref_fn, ours_fn):
    with torch.no_grad():
        expected, t_ref = timed(ref_fn)
    got, t_ours = timed(ours_fn)
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    print(f"{name:<22} max-abs {diff:.3e}  relative {diff / scale:.3e}  (max|ref| {scale:.3g})  "
          f"torch {t_ref:6.1f} s  paddle {t_ours:6.1f} s", flush=True)


def run_unet(rng):
    from diffusers import UNet2DConditionModel as Ref
    from stable_diffusion_chinese.models.unet import UNet2DConditionModel
    torch.manual_seed(0)
    ref = Ref.from_config(config("unet_sd15.json")).eval()
    ours = UNet2DConditionModel.from_config(config("unet_sd15.json"))
    ours.eval()
    from stable_diffusion_chinese.weights import load_into
    load_into(ours, ours.canonical_checkpoint_keys(state_of(ref)))
    x = rng.standard_normal((2, 4, 64, 64)).astype("float32")
    ctx = rng.standard_normal((2, 77, 768)).astype("float32")
    t = np.array([801, 801])
    with paddle.no_grad():
        compare("unet 64x64 batch 2", lambda: ref(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample.numpy(),
                lambda: ours(x, t, ctx).numpy())


def run_vae(rng):
    from diffusers import AutoencoderKL as Ref
    from stable_diffusion_chinese.models.vae import AutoencoderKL
    from stable_diffusion_chinese.weights import load_into
    torch.manual_seed(0)
    ref = Ref.from_config(config("vae_sd15.json")).eval()
    ours = AutoencoderKL.from_config(config("vae_sd15.json"))
    ours.eval()
    load_into(ours, ours.canonical_checkpoint_keys(state_of(ref)))
    image = rng.uniform(-1, 1, (1, 3, 512, 512)).astype("float32")
    z = rng.standard_normal((1, 4, 64, 64)).astype("float32")
    with paddle.no_grad():
        compare("vae encode 512 (mean)", lambda: ref.encode(torch.from_numpy(image)).latent_dist.mean.numpy(),
                lambda: ours.encode(image).mean.numpy())
        compare("vae decode 512", lambda: ref.decode(torch.from_numpy(z)).sample.numpy(),
                lambda: ours.decode(z).numpy())


def text_inputs(rng, vocab: int, length: int, pad: int):
    ids = rng.integers(3, vocab, (2, length)).astype("int64")
    mask = np.ones_like(ids)
    ids[1, length // 2:], mask[1, length // 2:] = pad, 0
    return ids, mask


def run_clip(rng):
    from transformers import CLIPTextConfig, CLIPTextModel as Ref
    from stable_diffusion_chinese.text import CLIPTextEncoder
    from stable_diffusion_chinese.weights import load_into
    torch.manual_seed(0)
    ref = Ref(CLIPTextConfig(**config("clip_text_sd15.json"))).eval()
    ours = CLIPTextEncoder.from_config(config("clip_text_sd15.json"))
    ours.eval()
    load_into(ours, ours.canonical_checkpoint_keys(state_of(ref)))
    ids = rng.integers(0, 49408, (2, 77)).astype("int64")
    with paddle.no_grad():
        compare("clip text 77 tokens", lambda: ref(torch.from_numpy(ids)).last_hidden_state.numpy(),
                lambda: ours.encode(ids).numpy())


def run_bert(rng):
    from transformers import BertConfig, BertModel as Ref
    from stable_diffusion_chinese.text import BertTextEncoder
    from stable_diffusion_chinese.weights import load_into
    torch.manual_seed(0)
    ref = Ref(BertConfig(**config("bert_taiyi.json")), add_pooling_layer=False).eval()
    ours = BertTextEncoder.from_config(config("bert_taiyi.json"))
    ours.eval()
    load_into(ours, ours.canonical_checkpoint_keys(state_of(ref)))
    ids, mask = text_inputs(rng, 21128, 512, 0)
    with paddle.no_grad():
        compare("taiyi bert 512 tokens", lambda: ref(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy(),
                lambda: ours.encode(ids, mask).numpy())


def run_xlmr(rng):
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig, RobertaSeriesModelWithTransformation as Ref)
    from stable_diffusion_chinese.text import RobertaSeriesTextEncoder
    from stable_diffusion_chinese.weights import load_into
    torch.manual_seed(0)
    ref = Ref(RobertaSeriesConfig(**ALT_TEXT)).eval()
    ours = RobertaSeriesTextEncoder.from_config(ALT_TEXT)
    ours.eval()
    load_into(ours, ours.canonical_checkpoint_keys(state_of(ref)))
    ids, mask = text_inputs(rng, 250002, 77, 1)
    with paddle.no_grad():
        compare("altdiffusion xlm-r 77", lambda: ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))[0].numpy(),
                lambda: ours.encode(ids, mask).numpy())


COMPONENTS = {"unet": run_unet, "vae": run_vae, "clip": run_clip, "bert": run_bert, "xlmr": run_xlmr}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(COMPONENTS), help="comma-separated: " + ", ".join(COMPONENTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paddle.set_device("cpu")
    print(f"torch {torch.__version__}, paddle {paddle.__version__}, threads {args.threads}, fp32, random weights")
    for name in args.only.split(","):
        COMPONENTS[name](np.random.default_rng(0))
        gc.collect()


if __name__ == "__main__":
    main()
