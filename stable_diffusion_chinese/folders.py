"""Writing a whole folder so that its real name never holds a half-written one.

The folder is filled under a staging name beside it (same file system, so the final move is one rename); a
failure removes the staging folder, a success replaces whatever stood under the real name. Model conversion,
``export --model`` and model soups all write folders this way.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def staged_folder(out: str | Path, staging_name: str | None = None) -> Iterator[Path]:
    """Yields the staging folder (``<out>.partial`` unless ``staging_name`` says otherwise), not yet created."""
    out = Path(out)
    staging = out.with_name(staging_name or out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)          # left by a run killed outright
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
