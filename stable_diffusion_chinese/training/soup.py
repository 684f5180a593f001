"""A uniform model soup: the element-wise mean of the weights of pipeline folders fine-tuned from one start.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time" (the uniform soup, section 3): runs fine-tuned from the same weights stay in one
basin, so their mean is a model as fast as each of them and often better than any. Only the networks that
were trained are averaged (UNet, text encoder, the scene reader kept for later runs); the VAE must be the
same in every folder, since the latents the UNet was trained on are its encoder's.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import paddle

from ..folders import staged_folder
from ..json_files import read_json_object as read_json
from .models import WEIGHTS_FILE, check_new_folder, check_pipeline_folders

AVERAGED = ("unet", "text_encoder", "scene_reader")
IDENTICAL = ("vae",)


def average_pipelines(sources: list[str | Path], out_dir: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Write the soup of ``sources`` (>= 2 pipeline folders) to ``out_dir``; returns bytes per weights file.

    Each averaged network must have the same config and the same weight names and shapes in every folder;
    the mean is taken in float64 and stored in each weight's own dtype (float16 in exported folders).
    The soup is written beside ``out_dir`` and renamed into place whole; ``overwrite`` replaces a folder
    already there (the recipe redoing its soup), otherwise a non-empty ``out_dir`` is refused."""
    sources, out_dir = [Path(s) for s in sources], Path(out_dir)
    if len(sources) < 2:
        raise ValueError(f"a soup needs at least two pipeline folders, got {len(sources)}")
    if any(out_dir.resolve() == s.resolve() for s in sources):
        raise ValueError(f"{out_dir} is one of the sources; write the soup to a new folder")
    if not overwrite:
        check_new_folder(out_dir, "soup")
    check_pipeline_folders(*sources)
    parts = [p for p in AVERAGED if (sources[0] / p / WEIGHTS_FILE).is_file()]
    for part in parts + list(IDENTICAL):
        _check_same_config(sources, part)
    for source in sources[1:]:
        for part in IDENTICAL:
            if (source / part / WEIGHTS_FILE).read_bytes() != (sources[0] / part / WEIGHTS_FILE).read_bytes():
                raise ValueError(f"{source / part} differs from {sources[0] / part}; a soup's folders must share "
                                 f"their {part} (the UNet's latents are its encoder's)")
    means = {part: _mean_state([_load(s, part) for s in sources], part, sources) for part in parts}
    with staged_folder(out_dir) as staging:
        shutil.copytree(sources[0], staging)                      # tokenizer, scheduler, VAE, configs
        for part, state in means.items():
            paddle.save(state, str(staging / part / WEIGHTS_FILE))
    return {part: (out_dir / part / WEIGHTS_FILE).stat().st_size for part in means}


def _load(source: Path, part: str) -> dict[str, np.ndarray]:
    path = source / part / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; every folder of a soup needs the same networks")
    return paddle.load(str(path), return_numpy=True)


def _check_same_config(sources: list[Path], part: str) -> None:
    first = sources[0] / part / "config.json"
    if not first.is_file():
        return                                                    # the scene reader has no config
    for source in sources[1:]:
        if read_json(source / part / "config.json") != read_json(first):
            raise ValueError(f"{source / part / 'config.json'} differs from {first}; only networks of one "
                             "architecture can be averaged")


def _mean_state(states: list[dict], part: str, sources: list[Path]) -> dict[str, np.ndarray]:
    for state, source in zip(states[1:], sources[1:]):
        if state.keys() != states[0].keys():
            odd = sorted(set(state) ^ set(states[0]))[:3]
            raise ValueError(f"{source / part} and {sources[0] / part} hold different weights ({', '.join(odd)})")
    mean = {}
    for key, first in states[0].items():
        for state, source in zip(states[1:], sources[1:]):
            if state[key].shape != first.shape:
                raise ValueError(f"{part} weight {key} is {state[key].shape} in {source} but {first.shape} "
                                 f"in {sources[0]}")
        if np.issubdtype(first.dtype, np.floating):
            mean[key] = (sum(s[key].astype(np.float64) for s in states) / len(states)).astype(first.dtype)
        else:                                                     # integer buffers (none today) must agree
            if any(not np.array_equal(s[key], first) for s in states[1:]):
                raise ValueError(f"{part} buffer {key} differs between the folders and cannot be averaged")
            mean[key] = first
    return mean
