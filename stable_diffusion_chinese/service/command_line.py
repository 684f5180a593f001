"""The generate command line, shared by ``hub run stable_diffusion_chinese`` and ``sd-chinese generate``.

Option names are generate()'s keyword names. Bad input prints one line naming the problem and exits with
status 2 (arguments argparse rejects) or 1 (values generate() rejects); no traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from .arguments import Limits

DEFAULT_OUTPUT_DIR = "stable_diffusion_chinese_output"
EXIT_BAD_VALUE = 1
EXIT_BAD_ARGUMENTS = 2
MAX_MESSAGE = 1000


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and names --help."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: error: {message} (see --help)", EXIT_BAD_ARGUMENTS)


def fail(message: str, status: int) -> NoReturn:
    print(one_line(message), file=sys.stderr)
    raise SystemExit(status)


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " ..."


def build_parser(prog: str, limits: Limits = Limits()) -> argparse.ArgumentParser:
    from ..schedulers import valid_names
    from .styles import style_names

    parser = OneLineParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate images from a Chinese, English or mixed prompt with Stable Diffusion on Paddle.",
        epilog=f"styles (--style):\n  {', '.join(style_names())}\n"
               f"schedulers (--scheduler):\n  {', '.join(valid_names())}\n"
               f"example:\n  {prog} --text \"远山，小船，江上烟雨\" --style 水墨 --seed 42 --output_dir out")
    add_generation_arguments(parser, limits)
    return parser


def add_generation_arguments(parser: argparse.ArgumentParser, limits: Limits = Limits()) -> None:
    parser.add_argument("--text", action="append", required=True, metavar="TEXT",
                        help="the prompt; repeat --text for several prompts")
    parser.add_argument("--style", metavar="STYLE", help="a style preset (listed below)")
    parser.add_argument("--negative_text", action="append", metavar="TEXT",
                        help="what to avoid; once for all prompts or once per --text")
    parser.add_argument("--width", type=int, help="image width, a multiple of 8 (default: the model's size)")
    parser.add_argument("--height", type=int, help="image height, a multiple of 8 (default: the model's size)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"denoising steps, 1..{limits.max_steps} (default: the model's, usually 20)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: "
                        "the model's, usually 7.5; the embedded model's is 3)")
    parser.add_argument("--guidance_rescale", type=float, default=None, help="0..1, 0.7 in Lin et al. 2023: "
                        "rescales the guided prediction against over-exposure at high --guidance (default 0, off)")
    parser.add_argument("--seed", type=int, help="random seed, 0..4294967295 (default: random; 0 is a seed too)")
    parser.add_argument("--num_images", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--scheduler", metavar="NAME", help="sampler (listed below; default: the model's)")
    parser.add_argument("--image", metavar="PATH", help="image to image: start from this picture (its size unless "
                        "--width/--height say otherwise)")
    parser.add_argument("--mask", metavar="PATH", help="with --image: inpaint, repainting the mask's white part")
    parser.add_argument("--strength", type=float, help="with --image: how much of it to repaint, above 0 up to 1 "
                        "(default 0.8; with --mask 1)")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help=f"folder for the PNGs (default ./{DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--model", help="model folder, single-file checkpoint, downloaded model name or 'embedded' "
                                        "(default: SD_CHINESE_MODEL, then config.json, then the embedded model)")


def generation_kwargs(args: argparse.Namespace) -> dict:
    texts = args.text
    negatives = args.negative_text
    return dict(text=texts[0] if len(texts) == 1 else texts,
                negative_text=None if negatives is None else (negatives[0] if len(negatives) == 1 else negatives),
                style=args.style, width=args.width, height=args.height, steps=args.steps, guidance=args.guidance,
                seed=args.seed, num_images=args.num_images, scheduler=args.scheduler, output_dir=args.output_dir,
                model=args.model, guidance_rescale=args.guidance_rescale, image=args.image, mask=args.mask,
                strength=args.strength)


def run_command(engine, argv: Sequence[str], prog: str) -> str:
    """Parse ``argv``, generate, and return the written paths, one per line."""
    args = build_parser(prog, engine.limits).parse_args(list(argv))
    try:
        result = engine.generate(**generation_kwargs(args))
    except (ValueError, TypeError, OSError) as error:
        fail(f"{prog}: error: {error}", EXIT_BAD_VALUE)
    return "\n".join(str(p) for p in result.paths)
