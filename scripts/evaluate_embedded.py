"""Generate the held-out prompt set with a pipeline and judge every image (GenEval-style).

  python scripts/evaluate_embedded.py [--model stable_diffusion_chinese/assets/embedded] [--limit N] [--kind pair]
  python scripts/evaluate_embedded.py --source renders        # the judge on clean renders (should be ~100 %)
  python scripts/evaluate_embedded.py --source reconstructions --model DIR   # renders through the VAE only
  python scripts/evaluate_embedded.py --source module     # through hub.Module(name="stable_diffusion_chinese")

Prints per-attribute accuracy (colour, shape, position, count, style, both objects of pair scenes,
background), the same by scene kind and for scenes with a named background, and seconds per image;
``--sheet PNG`` also writes a 4x4 contact sheet of the first 16 images and, next to it, a Markdown file
with how they were made, the judge's verdicts on them and their prompts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from stable_diffusion_chinese.scenes.evalset import SELECTION_FIRST_SEED, as_triples, build_selection_set, load_eval_set
from stable_diffusion_chinese.scenes.judge import judge
from stable_diffusion_chinese.scenes.render import render
from stable_diffusion_chinese.training.models import EMBEDDED_DIR

ATTRIBUTES = ("colour", "shape", "position", "count", "style", "both", "background")
TARGETS = {"colour": 0.95, "shape": 0.90, "position": 0.90, "count": 0.85, "style": 0.90, "both": 0.70}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=EMBEDDED_DIR, help="pipeline folder")
    chosen = parser.add_mutually_exclusive_group()       # one prompt set per run, never one silently over the other
    chosen.add_argument("--prompts", type=Path, default=EMBEDDED_DIR / "eval_prompts.json")
    chosen.add_argument("--selection-set", type=int, default=None, metavar="SEED",
                        help="judge a sister set built with this seed (evalset.build_selection_set, generation seeds from "
                             f"{SELECTION_FIRST_SEED}) instead of --prompts: pick among candidates on it, report on --prompts")
    parser.add_argument("--limit", type=int, default=None, help="judge only the first N prompts (after --kind)")
    parser.add_argument("--kind", choices=["single", "count", "pair"], default=None,
                        help="judge only the prompts of one scene kind")
    parser.add_argument("--source", choices=["pipeline", "module", "renders", "reconstructions"], default="pipeline")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's (model_index.json)")
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's (model_index.json)")
    parser.add_argument("--scheduler", default=None, help="sampler name (default: the model's)")
    parser.add_argument("--sheet", type=Path, default=None, help="write a 4x4 contact sheet PNG of the first 16")
    parser.add_argument("--json", type=Path, default=None,
                        help="write per-prompt verdicts, scenes and detected objects as JSON (scripts/pair_failure_modes.py reads it)")
    args = parser.parse_args(argv)

    items = [item for item in _prompt_set(args) if args.kind in (None, item[1].kind)][: args.limit]
    make = _image_source(args)
    rows, images, seconds = [], [], 0.0
    for prompt, scene, seed in items:
        started = time.perf_counter()
        image = make(prompt, scene, seed)
        seconds += time.perf_counter() - started
        verdict = judge(image, scene)
        rows.append({"prompt": prompt, "seed": seed, "scene": scene.to_dict(), **verdict.as_dict(),
                     "detected_style": verdict.detected_style,
                     "objects": [{"cell": o.cell, "shape": o.shape, "colour": o.colour, "area": o.area} for o in verdict.objects]})
        if len(images) < 16:
            images.append((np.asarray(image), prompt))
    steps, guidance = ("model default" if v is None else v for v in (args.steps, args.guidance))
    print(f"{len(items)} prompts, source={args.source}, model={args.model}, steps={steps}, guidance={guidance}")
    print(f"{'attribute':<12}{'accuracy':>10}{'n':>6}{'target':>8}")
    for attribute in ATTRIBUTES:
        right, total = _tally(rows, attribute)
        if total:
            target = f"{TARGETS[attribute]:.0%}" if attribute in TARGETS else "-"
            print(f"{attribute:<12}{right / total:>10.1%}{total:>6}{target:>8}")
    print(f"seconds per image: {seconds / max(len(items), 1):.3f}")
    _print_by_group(rows)
    if args.sheet:
        shown = args.model.resolve()
        shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown   # no home paths in docs
        made = (f"source {args.source}, model `{shown}`, steps {steps}, guidance {guidance}, "
                f"sampler {args.scheduler or 'model default'}")
        _contact_sheet(images, rows[:16], made, args.sheet)
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def _prompt_set(args) -> list:
    if args.selection_set is None:
        return load_eval_set(args.prompts)
    try:
        return as_triples(build_selection_set(args.selection_set))
    except ValueError as error:              # the shipped set's own seed: one line, no traceback
        raise SystemExit(f"--selection-set: {error}") from None


def _image_source(args):
    if args.source == "renders":
        return lambda prompt, scene, seed: render(scene, seed=seed)
    if args.source == "reconstructions":
        import paddle
        from stable_diffusion_chinese.models.vae import AutoencoderKL
        from stable_diffusion_chinese.training.data import to_model_images

        vae = AutoencoderKL.from_pretrained(args.model / "vae" if (args.model / "vae").is_dir() else args.model)

        def reconstruct(prompt, scene, seed):
            with paddle.no_grad():
                decoded = vae.decode(vae.encode(to_model_images([render(scene, seed=seed)])).mode()).numpy()
            return np.clip((decoded[0].transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        return reconstruct
    if args.source == "module":
        module = _hub_module(args.model)
        return lambda prompt, scene, seed: module.generate(text=prompt, steps=args.steps, guidance=args.guidance,
                                                           seed=seed, scheduler=args.scheduler)[0]
    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model, scheduler=args.scheduler)
    return lambda prompt, scene, seed: pipe(prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
                                            seed=seed, progress=False).images[0]


def _hub_module(model: Path):
    """The Module as users get it, ``hub.Module(name=...)``, from a throw-away hub home (linked with
    ``install_hub_module``; phone-home pointed at a closed port), so seconds per image are end to end."""
    import atexit
    import os
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="sdc_eval_hub_"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    (home / "conf").mkdir(parents=True)
    (home / "conf" / "config.yaml").write_text("server: http://127.0.0.1:9/paddlehub\n", encoding="utf-8")
    os.environ["HUB_HOME"] = str(home)  # read when paddlehub is imported, so before the import below
    from stable_diffusion_chinese.service.hub_home import install_hub_module
    install_hub_module(home)
    import paddlehub as hub

    return hub.Module(name="stable_diffusion_chinese", model=str(model), preload=True)


def _tally(rows, attribute: str) -> tuple[int, int]:
    """(right, judged) of one attribute over verdict rows; None verdicts (not asked for) are left out."""
    verdicts = [row[attribute] for row in rows if row[attribute] is not None]
    return sum(map(bool, verdicts)), len(verdicts)


def _print_by_group(rows) -> None:
    """Accuracy per scene kind and on named backgrounds: where the overall figures come from."""
    groups = {kind: [r for r in rows if r["scene"]["kind"] == kind] for kind in ("single", "count", "pair")}
    groups["named bg"] = [r for r in rows if r["scene"]["background"]]
    print(f"{'by group':<12}{'n':>5}" + "".join(f"{a:>10}" for a in ATTRIBUTES[:-1]))
    for name, members in groups.items():
        if members:
            cells = []
            for attribute in ATTRIBUTES[:-1]:
                right, total = _tally(members, attribute)
                cells.append(f"{right / total:>10.1%}" if total else f"{'-':>10}")
            print(f"{name:<12}{len(members):>5}" + "".join(cells))


def _contact_sheet(images, rows, made: str, path: Path) -> None:
    """4x4 grid, numbered in reading order; how they were made, the judge's verdicts on them and the prompts go
    to a Markdown file beside it (no CJK font needed to draw the sheet)."""
    from PIL import Image, ImageDraw

    side = 128
    sheet = Image.new("RGB", (4 * side, 4 * side), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, _) in enumerate(images):
        x, y = (i % 4) * side, (i // 4) * side
        sheet.paste(Image.fromarray(pixels.astype(np.uint8)), (x, y))
        draw.text((x + 3, y + 2), str(i + 1), fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    verdicts = ", ".join(f"{a} {right}/{total}" for a in ATTRIBUTES for right, total in [_tally(rows, a)] if total)
    lines = [f"# Contact sheet: {path.name}", "",
             f"The first {len(images)} held-out prompts with their evaluation seeds, made by "
             f"`scripts/evaluate_embedded.py --sheet` ({made}). Judged right: {verdicts}. The weights are "
             "described in docs/embedded_model.md (Status).", "",
             "Numbered in reading order (left to right, top to bottom).", ""]
    lines += [f"{i + 1}. {prompt}" for i, (_, prompt) in enumerate(images)]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
