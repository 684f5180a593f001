"""Does a pipeline take the background from the prompt or from the initial noise's channel means?

  python scripts/probe_noise_mean.py [--model stable_diffusion_chinese/assets/embedded] [--shift 0.15]

With SD's schedule x_T keeps sqrt(alpha_T) = 0.07 of the image, so a model can learn to read a mostly flat
background off the channel means of x_T; at sampling time those means are noise (std 1/16 for 16x16 latents).
For prompts that name a background (and one on white), this generates from one zero-mean noise with each
latent channel shifted by +-``shift`` in turn (and unshifted), and prints how often the judge finds the named
background, and how far (RGB units, mean over prompts) the background colour moves between the shifted images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from stable_diffusion_chinese.scenes.judge import judge
from stable_diffusion_chinese.scenes.world import Scene, SceneObject
from stable_diffusion_chinese.training.models import EMBEDDED_DIR

#: (prompt, the scene it asks for); backgrounds of several hues, on objects that contrast with them
PROMPTS = (
    ("蓝色背景，中间有一个黄色的圆形", Scene((SceneObject("circle", "yellow", 4),), "single", "blue")),
    ("黑色背景，左上角有一个粉色的正方形", Scene((SceneObject("square", "pink", 0),), "single", "black")),
    ("背景是绿色，右边有一个红色的三角形", Scene((SceneObject("triangle", "red", 5),), "single", "green")),
    ("黄色背景，正下方有一个紫色的五角星", Scene((SceneObject("star", "purple", 7),), "single", "yellow")),
    ("中间有一个红色的圆形", Scene((SceneObject("circle", "red", 4),), "single")),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=EMBEDDED_DIR)
    parser.add_argument("--shift", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model)
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    base = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)
    base -= base.mean(axis=(2, 3), keepdims=True)
    shifts = [np.zeros(shape[1])] + [sign * args.shift * np.eye(shape[1])[c] for c in range(shape[1])
                                     for sign in (1, -1)]
    right, named, moves = 0, 0, []
    for prompt, scene in PROMPTS:
        borders = []
        for shift in shifts:
            image = np.asarray(pipe(prompt, latents=base + shift.reshape(1, -1, 1, 1).astype(np.float32),
                                    progress=False).images[0])
            if scene.background is not None:
                right += bool(judge(image, scene).background)
                named += 1
            borders.append(np.median(np.concatenate([image[:4].reshape(-1, 3), image[-4:].reshape(-1, 3)]), axis=0))
        moves.append(float(np.mean(np.linalg.norm(np.array(borders) - borders[0], axis=1))))
        print(f"{prompt}: background moves {moves[-1]:.1f} RGB units on average")
    print(f"{args.model}: named background right in {right}/{named}, mean move {np.mean(moves):.1f} RGB units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
