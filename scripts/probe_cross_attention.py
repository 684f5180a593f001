"""Where the UNet looks for a colour word: the cross-attention of two-object prompts, by block.

  python scripts/probe_cross_attention.py [--model stable_diffusion_chinese/assets/embedded]

For captions "{P1}是{C1}的{S1}，{P2}是{C2}的{S2}" (P1 / P2 two cells, C1 != C2) it generates each image with the
model's defaults and records every cross-attention (``attn2``) map of the conditional half of the guided
batch. For each colour word's token it sums the attention its object's cell receives and the attention the
other object's cell receives (equal areas) and prints own / (own + other) per block, averaged over heads,
sampling steps and captions: 1.0 = the colour goes only where its object is, 0.5 = both objects get it
alike, which is what a model drawing one colour on both (scripts/pair_failure_modes.py) would show.
Forward hooks read the maps (training/attention_maps.py, which the binding loss uses too); the model is not
changed.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from stable_diffusion_chinese.training.attention_maps import CrossAttentionRecorder, caption_token_positions, cell_mask
from stable_diffusion_chinese.training.models import EMBEDDED_DIR

FRAME = "{P1}是{C1}的{S1}，{P2}是{C2}的{S2}"
#: (word, cell): opposite cells, so the two objects never share a row and column of a coarse map
POSITIONS = ((("左边", 3), ("右边", 5)), (("左上角", 0), ("右下角", 8)), (("正上方", 1), ("正下方", 7)))
COLOURS = ("红色", "蓝色", "黄色", "绿色")
SHAPES = ("圆形", "三角形")


def own_share(maps: np.ndarray, token: int, own: int, other: int) -> float:
    """``maps``: [queries, keys] attention of one square map; own / (own + other) of ``token``'s column."""
    side = int(round(maps.shape[0] ** 0.5))
    column = maps[:, token]
    a, b = column[cell_mask(own, side)].sum(), column[cell_mask(other, side)].sum()
    return float(a / (a + b)) if a + b > 0 else 0.5


def token_index(tokenizer, prompt: str, word: str) -> int:
    """Index in the encoded prompt of ``word``'s first character (the binding loss's character -> token map)."""
    positions = caption_token_positions(tokenizer, prompt)
    if positions is None or prompt.count(word[0]) != 1:
        raise ValueError(f"{word[0]!r} is not one token that occurs once in {prompt!r}")
    return positions[prompt.index(word[0])]


def probe(pipe, captions: int | None = None) -> dict[str, float]:
    """Mean own share per ``attn2`` layer over the probe captions."""
    cases = [(p, c, s) for p, c, s in itertools.product(POSITIONS, itertools.permutations(COLOURS, 2), SHAPES)]
    shares: dict[str, list[float]] = {}
    for ((p1, cell1), (p2, cell2)), (c1, c2), shape in cases[:captions]:
        prompt = FRAME.format(P1=p1, C1=c1, S1=shape, P2=p2, C2=c2, S2="正方形")
        tokens = [(token_index(pipe.tokenizer, prompt, c1), cell1, cell2),
                  (token_index(pipe.tokenizer, prompt, c2), cell2, cell1)]
        with CrossAttentionRecorder(pipe.unet, rows=1) as recorder:   # the conditional half of the guided batch
            pipe(prompt, seed=0, progress=False)
        for name, calls in recorder.maps.items():
            for maps in calls:
                shares.setdefault(name, []).extend(own_share(maps[0].numpy(), *t) for t in tokens)
    return {name: float(np.mean(values)) for name, values in shares.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=EMBEDDED_DIR, help="pipeline folder")
    parser.add_argument("--captions", type=int, default=None, help="probe only the first N captions (72 in all)")
    args = parser.parse_args(argv)
    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model)
    print("own / (own + other) of each colour word's cross-attention, by layer (0.5 = no spatial binding)")
    for name, share in probe(pipe, args.captions).items():
        print(f"{name:<60}{share:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
