"""Full-size end-to-end check: SD1.5-sized random components in diffusers' StableDiffusionPipeline and ours.

The same weights (saved by diffusers as a pipeline folder, loaded by our ``from_pretrained``), the same
numpy initial latents, 256x256, 4 steps, for DDIM, Euler and DPM++ 2M. Prints the share of pixels within
1/255, the max pixel difference, and each framework's time. Not a CI test (about 10 minutes, ~14 GB).

    python scripts/parity_pipeline_full_size.py [--steps 4] [--size 256] [--schedulers ddim,euler,dpm++2m]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "tests" / "reference_configs"
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")
REFERENCE_SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpm++2m": "DPMSolverMultistepScheduler"}


def config(name: str) -> dict:
    values = json.loads((CONFIGS / name).read_text())
    values.pop("_use_default_values", None)
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--schedulers", default=",".join(REFERENCE_SCHEDULERS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import diffusers
    import transformers
    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline

    torch.manual_seed(0)
    reference = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel.from_config(config("unet_sd15.json")).eval(),
        vae=diffusers.AutoencoderKL.from_config(config("vae_sd15.json")).eval(),
        text_encoder=transformers.CLIPTextModel(transformers.CLIPTextConfig(**config("clip_text_sd15.json"))).eval(),
        # a real CLIP vocabulary cannot be downloaded here; the tiny tokenizer's ids fit the full-size encoder
        tokenizer=transformers.CLIPTokenizer.from_pretrained(str(CONFIGS / "tokenizer_tiny_clip")),
        scheduler=diffusers.DDIMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    latents = np.random.default_rng(0).standard_normal((1, 4, args.size // 8, args.size // 8)).astype("float32")
    prompt, negative = "a watercolor landscape 水墨山水", "blurry"
    print(f"torch {torch.__version__}, threads {args.threads}, {args.size}x{args.size}, {args.steps} steps, "
          f"SD1.5 sizes, random weights")
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder, safe_serialization=True)
        start = time.perf_counter()
        ours = StableDiffusionPipeline.from_pretrained(folder)
        print(f"our from_pretrained of the diffusers folder: {time.perf_counter() - start:.1f} s")
        for name in args.schedulers.split(","):
            # the sampler as a diffusers user of the saved folder gets it; ours starts from the same file
            reference.scheduler = getattr(diffusers, REFERENCE_SCHEDULERS[name]).from_pretrained(folder, subfolder="scheduler")
            kwargs = dict(negative_prompt=negative, height=args.size, width=args.size,
                          num_inference_steps=args.steps, guidance_scale=7.5)
            start = time.perf_counter()
            with torch.no_grad():
                expected = reference(prompt, latents=torch.from_numpy(latents), **kwargs).images[0]
            t_ref = time.perf_counter() - start
            start = time.perf_counter()
            got = ours(prompt, latents=latents, scheduler=name, progress=False, **kwargs).images[0]
            t_ours = time.perf_counter() - start
            diff = np.abs(np.asarray(got, np.int16) - np.asarray(expected, np.int16))
            print(f"{name:<9} pixels within 1/255: {100 * (diff <= 1).mean():.3f} %  max diff {diff.max()}  "
                  f"torch {t_ref:.1f} s  paddle {t_ours:.1f} s", flush=True)


if __name__ == "__main__":
    main()
