"""Average the trained weights of pipeline folders fine-tuned from one start (a uniform model soup).

  python scripts/average_pipelines.py --out /work/soup /work/run12c/pipeline_final /work/run12d/pipeline_final

UNet, text encoder and scene reader are averaged; tokenizer, scheduler and VAE (which must be the same
in every folder) are copied. See stable_diffusion_chinese/training/soup.py and docs/embedded_model.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stable_diffusion_chinese.training.soup import average_pipelines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path, help="pipeline folders (two or more)")
    parser.add_argument("--out", required=True, type=Path, help="the pipeline folder to write")
    args = parser.parse_args(argv)
    try:
        sizes = average_pipelines(args.sources, args.out)
    except (FileNotFoundError, ValueError) as error:      # a wrong folder: one line, no traceback
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"soup of {len(args.sources)} folders written to {args.out}:",
          {k: f"{v / 1e6:.2f} MB" for k, v in sizes.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
