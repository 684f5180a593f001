"""Make the installed package PaddleHub's Module ``stable_diffusion_chinese``.

PaddleHub finds an installed module at ``$HUB_HOME/modules/<name>`` and imports ``<name>.module`` from there
(paddlehub 2.4.0 ``module/manager.py`` and ``utils/utils.py load_py_module``). That entry is a symbolic link
to this package rather than a copy, so PaddleHub and ``import stable_diffusion_chinese`` always run the same
code (docs/architecture.md). ``hub install <folder>`` would make a copy that stops following upgrades.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping

MODULE_NAME = "stable_diffusion_chinese"


class HubInstallError(OSError):
    """The hub-home entry cannot be made (something else is in the way, or links are not allowed)."""


def hub_home(environ: Mapping[str, str] | None = None) -> Path:
    """PaddleHub's home: ``$HUB_HOME``, else ``~/.paddlehub`` (paddlehub 2.4.0 ``env.py``)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("HUB_HOME") or os.path.join(os.path.expanduser("~"), ".paddlehub")).expanduser()


def package_folder() -> Path:
    import stable_diffusion_chinese

    return Path(stable_diffusion_chinese.__file__).resolve().parent


def module_entry(home: Path) -> Path:
    return home / "modules" / MODULE_NAME


def install_hub_module(home: Path | None = None, force: bool = False) -> Path:
    """Point ``<home>/modules/stable_diffusion_chinese`` at this package; returns the entry's path.

    An existing link is re-pointed; an existing folder (a copy from ``hub install``) is replaced only with
    ``force``. The link is made under a temporary name and renamed into place, so PaddleHub never sees a
    half-made entry.
    """
    home = hub_home() if home is None else Path(home)
    entry, target = module_entry(home), package_folder()
    if entry.is_symlink() and entry.resolve() == target:
        return entry
    if entry.exists() and not entry.is_symlink():
        if not force:
            raise HubInstallError(f"{entry} already exists and is a copy, not a link to the installed package "
                                  f"{target}; pass --force to replace it")
        shutil.rmtree(entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HubInstallError(f"cannot create the hub module folder {entry.parent} ({error.strerror}); "
                              f"HUB_HOME / --hub-home must be a folder") from None
    temporary = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}")
    try:
        os.symlink(target, temporary, target_is_directory=True)
    except OSError as error:
        raise HubInstallError(f"cannot create a symbolic link at {entry} ({error.strerror}); on Windows enable "
                              "Developer Mode, or run `hub install` on the package folder (a copy)") from None
    os.replace(temporary, entry)
    return entry


def uninstall_hub_module(home: Path | None = None) -> bool:
    """Remove the link (never the package it points to); False if there was none."""
    entry = module_entry(hub_home() if home is None else Path(home))
    if entry.is_symlink():
        entry.unlink()
        return True
    if entry.exists():
        raise HubInstallError(f"{entry} is a folder, not our link; remove it with `hub uninstall {MODULE_NAME}`")
    return False
