"""Train the embedded default model, export it, or fine-tune any model on a folder of captioned images.

  OMP_NUM_THREADS=1 python scripts/train_embedded.py recipe --run-dir /work/recipe   (all of it, from random weights)
  python scripts/train_embedded.py vae        --run-dir /work/embedded_run
  python scripts/train_embedded.py vae-decoder --run-dir /work/embedded_run [--init-from <VAE folder>]
  python scripts/train_embedded.py text-reading --run-dir /work/embedded_run [--init-from <pipeline folder>]
  python scripts/train_embedded.py diffusion  --run-dir /work/embedded_run [--steps N] [--init-from <pipeline folder>]
  python scripts/train_embedded.py export     --run-dir /work/embedded_run --out stable_diffusion_chinese/assets/embedded
  python scripts/train_embedded.py export     --model <pipeline folder> --vae <VAE folder> --out <new folder>
  python scripts/train_embedded.py finetune   --model <pipeline folder> --data <images + metadata.jsonl> --run-dir <dir>

Every stage resumes from the newest checkpoint in its folder. See docs/embedded_model.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from stable_diffusion_chinese.training import recipe, stages
from stable_diffusion_chinese.training.config import TrainConfig


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run_stage(args, stage_config(parser, args))
    except (FileNotFoundError, ValueError, recipe.StageFailed) as error:   # a missing folder, a bad option or a
        # failed recipe stage (its log has the traceback): one line
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["recipe", "vae", "vae-decoder", "text-reading", "diffusion", "export",
                                          "finetune"])
    parser.add_argument("--run-dir", type=Path, help="the run's folder (every stage but export --model)")
    parser.add_argument("--out", type=Path, help="export: the pipeline folder to write")
    parser.add_argument("--model", type=Path, help="finetune: the pipeline folder to start from; export: the "
                        "pipeline folder to write again with --vae")
    parser.add_argument("--vae", type=Path, help="export: ship this VAE folder (same encoder, e.g. "
                        "<run-dir>/vae_decoder_model) instead of <run-dir>/vae_model")
    parser.add_argument("--init-from", type=Path, help="diffusion: start the UNet and text encoder from this "
                        "pipeline folder's weights instead of random ones (ignored once a checkpoint exists); "
                        "vae-decoder: the VAE folder whose decoder is fine-tuned (default <run-dir>/vae_model)")
    parser.add_argument("--data", type=Path, help="finetune: folder with images and metadata.jsonl")
    parser.add_argument("--resolution", type=int, help="finetune: image side (default: the model's)")
    parser.add_argument("--no-progress", action="store_true")
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument("--" + field.name.replace("_", "-"), type=_bool if field.type in (bool, "bool") else
                            type(field.default), default=None)
    return parser


def stage_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainConfig:
    """The stage's defaults with the options given, after the checks of which stage takes which options."""
    defaults = {"vae": stages.VAE_DEFAULTS, "vae-decoder": stages.VAE_DECODER_DEFAULTS,
                "text-reading": stages.READING_DEFAULTS,
                "finetune": dict(steps=1000, batch_size=4, learning_rate=1e-5, warmup_steps=0, ema_decay=0.999)
                }.get(args.stage, stages.DIFFUSION_DEFAULTS)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name) is not None}
    if args.stage == "finetune" and (args.model is None or args.data is None):
        parser.error("finetune needs --model and --data")
    if args.stage == "export" and args.model is not None and (args.vae is None or args.out is None):
        parser.error("export --model needs --vae and --out (the pipeline folder with that VAE)")
    if args.run_dir is None and not (args.stage == "export" and args.model is not None):
        parser.error("the following arguments are required: --run-dir")
    given = sorted(overrides) + [name for name in ("out", "model", "vae", "init_from", "data", "resolution")
                                 if getattr(args, name) is not None]
    if args.stage == "recipe" and given:
        parser.error(f"the recipe's options are its table (training/recipe.py), not {given}")
    return TrainConfig(**{**defaults, **overrides})     # a bad value: ValueError, one line from main


def _run_stage(args, config: TrainConfig) -> int:
    progress = not args.no_progress
    if args.stage == "recipe":
        out = recipe.run_recipe(args.run_dir, [sys.executable, str(Path(__file__).resolve())])
        print(f"recipe finished: {out} ({recipe.recipe_seconds(args.run_dir) / 3600:.2f} h of wall-clock in all)")
    elif args.stage == "vae":
        print("trained VAE written to", stages.train_vae(args.run_dir, config, progress))
    elif args.stage == "vae-decoder":
        print("VAE with the fine-tuned decoder written to",
              stages.train_vae_decoder(args.run_dir, config, args.init_from, progress))
    elif args.stage == "text-reading":
        print("text encoder that reads scenes written to",
              stages.train_text_reading(args.run_dir, config, args.init_from, progress))
    elif args.stage == "diffusion":
        print("diffusion stage reached step", stages.train_diffusion(args.run_dir, config, progress=progress,
                                                                     init_from=args.init_from))
    elif args.stage == "export" and args.model is not None:
        size = stages.export_with_vae(args.model, args.vae, args.out)
        print(f"{args.model} with the VAE of {args.vae} written to {args.out} (vae {size / 1e6:.2f} MB)")
    elif args.stage == "export":
        out = args.out or args.run_dir / "pipeline"
        sizes = stages.export_embedded(args.run_dir, config, out, args.vae)
        print(f"exported to {out}:", {k: f"{v / 1e6:.2f} MB" for k, v in sizes.items()})
    else:
        trainer = stages.finetune(args.model, args.data, args.run_dir, config, args.resolution, progress)
        out = args.out or args.run_dir / "pipeline"
        stages.export_finetuned(trainer, args.model, out)
        print("fine-tuned model written to", out)
    return 0


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


if __name__ == "__main__":
    sys.exit(main())
