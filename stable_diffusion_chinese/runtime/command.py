"""``python -m stable_diffusion_chinese export MODEL OUT``: the CLI face of ``export_model``."""
from __future__ import annotations

import argparse
import sys

#: export.ALL_GRAPHS, spelled out so that building the CLI parser does not import Paddle (a test keeps them equal)
ALL_GRAPHS = ("unet", "vae_decoder", "vae_encoder", "text_encoder")


def add_export_command(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on the CLI's subparsers (``cli.build_parser``)."""
    export = subparsers.add_parser(
        "export", help="export a model folder to static Paddle graphs for Paddle Inference",
        description="Export the text encoder, UNet, VAE decoder and VAE encoder of a model folder (diffusers or "
                    "converted) to static Paddle programs with dynamic batch and image sizes, with the "
                    "tokenizer and scheduler, ready for load_pipeline(OUT, runtime='inference').")
    export.add_argument("model", help="model folder (model_index.json + component folders)")
    export.add_argument("output", help="folder to write (must be empty unless --overwrite)")
    export.add_argument("--overwrite", action="store_true", help="replace an export already in the output folder")
    export.add_argument("--graphs", default=",".join(ALL_GRAPHS),
                        help=f"comma-separated subset of {','.join(ALL_GRAPHS)} (default: all)")
    fused = export.add_mutually_exclusive_group()
    fused.add_argument("--fused-attention", dest="fused_attention", action="store_true", default=None,
                       help="use Paddle's fused CPU self-attention kernel (needs AVX-512F; default: if this CPU has it)")
    fused.add_argument("--no-fused-attention", dest="fused_attention", action="store_false",
                       help="plain matmul/softmax attention (runs on any x86 CPU)")
    export.set_defaults(handler=run_export)
    return export


def run_export(args: argparse.Namespace) -> None:
    from .loading import export_folder

    graphs = tuple(name.strip() for name in args.graphs.split(",") if name.strip())
    out = export_folder(args.model, args.output, graphs=graphs, fused_attention=args.fused_attention,
                        overwrite=args.overwrite, progress=lambda name: print(f"exporting {name}", file=sys.stderr))
    print(out)
