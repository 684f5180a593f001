"""``sd-chinese`` / ``python -m sdc_sdk``: generate, styles, schedulers, convert, download, run (job files),
install-hub-module.

``convert`` is the engine's own command (``stable_diffusion_chinese.cli``), passed its arguments unchanged.
Bad input prints one line and exits with status 1 (2 for arguments argparse rejects); no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from stable_diffusion_chinese.service.command_line import (EXIT_BAD_VALUE, OneLineParser, add_generation_arguments,
                                                           fail, generation_kwargs)

PROG = "sd-chinese"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Stable Diffusion on PaddlePaddle, Chinese prompts first.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    generate = commands.add_parser("generate", help="generate images (locally, or on a server with --server)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="styles: `sd-chinese styles`; schedulers: `sd-chinese schedulers`")
    add_generation_arguments(generate)
    generate.add_argument("--server", metavar="URL", help="send the request to a served module (hub serving) "
                                                          "instead of generating here")
    generate.set_defaults(handler=run_generate)

    styles = commands.add_parser("styles", help="list the style presets and what each adds to the prompt")
    styles.add_argument("--json", action="store_true", help="print JSON")
    styles.add_argument("--server", metavar="URL", help="list a served module's styles")
    styles.set_defaults(handler=run_styles)

    schedulers = commands.add_parser("schedulers", help="list the sampler names --scheduler accepts")
    schedulers.set_defaults(handler=run_schedulers)

    commands.add_parser("convert", add_help=False,
                        help="convert a diffusers folder or single-file checkpoint to a Paddle folder "
                             "(`sd-chinese convert --help`)")

    download = commands.add_parser("download", help="fetch, verify (sha256) and install a model archive")
    download.add_argument("url", nargs="?", help="archive URL (.tar.gz/.zip; default: download_url in config.json)")
    download.add_argument("--sha256", help="the archive's sha256 (64 hex digits; required with a URL)")
    download.add_argument("--name", help="install as models/NAME (default: the archive's file name)")
    download.add_argument("--overwrite", action="store_true", help="replace an installed model of that name")
    download.add_argument("--use", action="store_true", help="also make it the default model (config.json)")
    download.set_defaults(handler=run_download)

    jobs = commands.add_parser("run", help="run every generation in a JSON/YAML job file (all checked first)")
    jobs.add_argument("job_file")
    jobs.add_argument("--server", metavar="URL", help="generate on a served module")
    jobs.set_defaults(handler=run_job_file)

    hub = commands.add_parser("install-hub-module",
                              help="make `hub.Module(name=\"stable_diffusion_chinese\")`, `hub run` and "
                                   "`hub serving` use this installed package")
    hub.add_argument("--hub-home", help="PaddleHub home (default: $HUB_HOME, else ~/.paddlehub)")
    hub.add_argument("--force", action="store_true", help="replace a copied module folder left by `hub install`")
    hub.add_argument("--remove", action="store_true", help="remove the link instead (the package stays)")
    hub.set_defaults(handler=run_install_hub_module)
    return parser


def run_generate(args: argparse.Namespace) -> None:
    kwargs = generation_kwargs(args)
    if args.server:
        from .client import Client

        kwargs.pop("model")
        if args.model is not None:
            raise ValueError("--model cannot be used with --server: the server chooses its model")
        images = Client(args.server).generate(**kwargs)
    else:
        from .local import generate

        images = generate(**kwargs)
    for image in images:
        print(image.info["path"])


def run_styles(args: argparse.Namespace) -> None:
    if args.server:
        from .client import Client

        table = Client(args.server).styles()
    else:
        from .local import styles

        table = styles()
    if args.json:
        print(json.dumps(table, ensure_ascii=False, indent=2))
        return
    for name, fragments in table.items():
        print(f"{name}\t+ {fragments['prompt']}\t- {fragments['negative']}")


def run_schedulers(args: argparse.Namespace) -> None:
    from .local import schedulers

    print("\n".join(schedulers()))


def run_download(args: argparse.Namespace) -> None:
    from .local import download

    print(download(args.url, args.sha256, name=args.name, overwrite=args.overwrite, use=args.use))


def run_job_file(args: argparse.Namespace) -> None:
    from .jobs import check_jobs, load_jobs, run_jobs

    jobs = load_jobs(args.job_file)
    if args.server:
        from .client import Client

        client = Client(args.server)
        check_jobs(jobs, limits=_limits(client.limits()), local=False)
        generate = client.generate
    else:
        from .local import generate

        check_jobs(jobs)
    for number, paths in enumerate(run_jobs(jobs, generate), 1):
        for path in paths:
            print(f"job {number}: {path}")


def _limits(values: dict):
    from stable_diffusion_chinese.service import Limits

    return Limits(**{k: v for k, v in values.items() if k in Limits.names()})


def run_install_hub_module(args: argparse.Namespace) -> None:
    from pathlib import Path

    from stable_diffusion_chinese.service.hub_home import uninstall_hub_module

    if args.remove:
        removed = uninstall_hub_module(Path(args.hub_home) if args.hub_home else None)
        print("removed" if removed else "there was no link to remove")
        return
    from .local import install_hub_module

    print(install_hub_module(args.hub_home, force=args.force))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from stable_diffusion_chinese.cli import main as engine_main

        return engine_main(argv)
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, TypeError, OSError) as error:
        fail(f"{PROG} {args.command}: error: {error}", EXIT_BAD_VALUE)
    return 0
