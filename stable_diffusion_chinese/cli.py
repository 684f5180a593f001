"""Command line: ``python -m stable_diffusion_chinese convert SRC OUT`` (also installed as ``sd-chinese``).

Errors in the input (missing files, unsafe or broken checkpoints, weights that do not fit a config) print
one line and exit with status 1; a traceback means a bug in this package.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

EXIT_BAD_INPUT = 1
MAX_MESSAGE = 2000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd-chinese", description="Stable Diffusion on PaddlePaddle")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    convert = commands.add_parser(
        "convert", help="convert a diffusers folder or a single-file checkpoint to a Paddle pipeline folder",
        description="Convert a diffusers pipeline folder (model_index.json + component folders) or an original "
                    "single-file SD 1.x checkpoint (.safetensors/.ckpt) into a Paddle pipeline folder.")
    convert.add_argument("source", help="diffusers pipeline folder, or single-file checkpoint")
    convert.add_argument("output", help="folder to write (must be empty unless --overwrite)")
    convert.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    single = convert.add_argument_group("single-file checkpoints (default: SD 1.5 configs shipped with the package)")
    single.add_argument("--unet-config", help="diffusers UNet config.json")
    single.add_argument("--vae-config", help="diffusers AutoencoderKL config.json")
    single.add_argument("--text-encoder-config", help="transformers CLIPTextModel config.json")
    single.add_argument("--scheduler-config", help="scheduler_config.json to write")
    single.add_argument("--tokenizer", help="tokenizer folder to copy (default: SD 1.x's CLIP tokenizer, shipped)")
    convert.set_defaults(handler=run_convert)
    from .runtime.command import add_export_command

    add_export_command(commands)
    return parser


def run_convert(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .weights.convert import convert

    with tqdm(desc="convert", unit="step", file=sys.stderr) as bar:
        def progress(done: int, total: int, name: str, summary: str | None) -> None:
            bar.total = total
            if summary is None:
                bar.set_postfix_str(name)
            else:
                bar.write(summary, file=sys.stderr)
                bar.update(done - bar.n)

        convert(args.source, args.output, overwrite=args.overwrite, progress=progress,
                unet_config=args.unet_config, vae_config=args.vae_config,
                text_encoder_config=args.text_encoder_config, scheduler_config=args.scheduler_config,
                tokenizer=args.tokenizer)
    print(args.output)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError) as error:  # bad input: our errors derive from ValueError/FileNotFoundError
        message = " ".join(str(error).split())
        if len(message) > MAX_MESSAGE:  # a mismatch can list hundreds of keys
            message = message[:MAX_MESSAGE] + " ..."
        print(f"sd-chinese {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
