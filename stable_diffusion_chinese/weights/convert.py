"""Convert a diffusers pipeline folder or an original single-file checkpoint into a Paddle pipeline folder.

The output has the source's layout: ``model_index.json``, one folder per component; network components get
their ``config.json`` and ``model.pdparams`` (Paddle layout), tokenizer/scheduler folders are copied as-is.
A single model folder (``config.json`` + weights, no ``model_index.json``) converts to one Paddle model folder.
A single-file checkpoint carries no tokenizer: SD 1.x's CLIP tokenizer, derived from the OpenAI merges file the
package ships, is written as its ``tokenizer/`` folder unless a tokenizer folder is given.
Each network is built from its config and loaded strictly (``load_into``), so a checkpoint that does not
fit its config fails here, with the keys named, rather than at generation time; Linear weights are
transposed by walking the model, never guessed from tensor shapes.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..folders import staged_folder
from ..tokenizers.clip import SD1_VOCAB_SIZE, write_sd1_clip_tokenizer
from .errors import WeightsNotFoundError
from .read import Checkpoint, find_weights_file, read_checkpoint
from .state_dict import load_into

PADDLE_WEIGHTS = "model.pdparams"  # the name models/pretrained.py reads and writes
MODEL_INDEX = "model_index.json"

# reference class (model_index.json / config.json) -> (our module, our class); text encoders are listed in
# stable_diffusion_chinese.text.TEXT_ENCODER_CLASSES and resolved there.
NETWORK_CLASSES = {
    "UNet2DConditionModel": ("stable_diffusion_chinese.models.unet", "UNet2DConditionModel"),
    "AutoencoderKL": ("stable_diffusion_chinese.models.vae", "AutoencoderKL"),
}

# Single-file checkpoints carry no configs: SD 1.5's, shipped in assets/configs/ (from the diffusers
# SD 1.5 pipeline), are used unless the caller passes others.
DEFAULT_SINGLE_FILE_CONFIGS = {
    "unet": "unet_sd15.json",
    "vae": "vae_sd15.json",
    "text_encoder": "clip_text_sd15.json",
    "scheduler": "scheduler_sd15.json",
}
SINGLE_FILE_CLASSES = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel"}


class ConversionError(ValueError):
    """The source cannot be converted as asked (bad layout, unknown component class, existing output)."""


@dataclasses.dataclass
class ConvertStep:
    """One unit of work (usually a component); ``run`` returns a one-line summary of what it did."""

    name: str
    run: Callable[[], str]


# progress(steps_done, steps_total, step_name, summary): summary is None when the step starts
Progress = Callable[[int, int, str, "str | None"], None]


def convert(source: str | os.PathLike, out_folder: str | os.PathLike, *, overwrite: bool = False,
            progress: Progress | None = None, **options: Any) -> list[str]:
    """Convert ``source`` (pipeline folder or single file) into ``out_folder``; returns one summary per step.

    Everything is written to a staging folder next to ``out_folder`` and moved into place at the end, so a
    failed conversion leaves no half-written output (and ``overwrite`` replaces the old folder only on
    success). ``progress`` (see ``Progress``) is called before and after each step.
    Options (``unet_config``, ``vae_config``, ``text_encoder_config``, ``scheduler_config``, ``tokenizer``)
    apply to single-file sources only: a pipeline folder has its own.
    """
    source, out = Path(source), Path(out_folder)
    _check_output(source, out, overwrite)
    summaries = []
    with staged_folder(out, f".{out.name}.converting") as staging:
        steps = _plan(source, staging, **options)
        for done, step in enumerate(steps):
            if progress:
                progress(done, len(steps), step.name, None)
            summaries.append(step.run())
            if progress:
                progress(done + 1, len(steps), step.name, summaries[-1])
    return summaries


def _plan(source: Path, out: Path, *, unet_config: str | os.PathLike | None = None,
          vae_config: str | os.PathLike | None = None, text_encoder_config: str | os.PathLike | None = None,
          scheduler_config: str | os.PathLike | None = None,
          tokenizer: str | os.PathLike | None = None) -> list[ConvertStep]:
    if source.is_dir():
        given = {"unet_config": unet_config, "vae_config": vae_config, "text_encoder_config": text_encoder_config,
                 "scheduler_config": scheduler_config, "tokenizer": tokenizer}
        extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if extra:
            raise ConversionError(f"{', '.join(extra)}: for single-file checkpoints only; {source} is a folder "
                                  "with its own configs")
        if (source / MODEL_INDEX).is_file():
            return _pipeline_folder_steps(source, out)
        if (source / "config.json").is_file():
            return _model_folder_steps(source, out)
        raise ConversionError(f"{source} has neither {MODEL_INDEX} (a pipeline) nor config.json (one model)")
    configs = {"unet": unet_config, "vae": vae_config, "text_encoder": text_encoder_config,
               "scheduler": scheduler_config}
    return _single_file_steps(source, out, configs, Path(tokenizer) if tokenizer else None)


def _check_output(source: Path, out: Path, overwrite: bool) -> None:
    if not source.exists():
        raise WeightsNotFoundError(f"no such file or folder: {source}")
    src, dst = source.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise ConversionError(f"the output folder {out} must not be the source or contain it")
    if out.exists() and not out.is_dir():
        raise ConversionError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"output folder {out} is not empty (pass overwrite=True / --overwrite to replace it)")


# ---------------------------------------------------------------- networks

def network_class(reference_class: str) -> type:
    """Our Paddle class for a diffusers/transformers class name such as ``"UNet2DConditionModel"``."""
    if reference_class in NETWORK_CLASSES:
        module_name, class_name = NETWORK_CLASSES[reference_class]
        return getattr(importlib.import_module(module_name), class_name)
    from ..text import TEXT_ENCODER_CLASSES

    if reference_class in TEXT_ENCODER_CLASSES:
        return TEXT_ENCODER_CLASSES[reference_class]
    raise ConversionError(f"no Paddle network for class {reference_class!r}; supported: "
                          f"{sorted(_supported_classes())}")


def _supported_classes() -> set[str]:
    from ..text import TEXT_ENCODER_CLASSES

    return set(NETWORK_CLASSES) | set(TEXT_ENCODER_CLASSES)


def is_network_class(reference_class: str | None) -> bool:
    return reference_class in _supported_classes()


def build_network(reference_class: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
                  torch_layout: bool, source: str):
    """Our network for ``reference_class``, built from ``config`` with ``tensors`` loaded strictly."""
    cls = network_class(reference_class)
    model = cls.to_be_loaded(dict(config))
    canonical = getattr(cls, "canonical_checkpoint_keys", None)
    if canonical is not None:
        tensors = canonical(tensors)
    load_into(model, tensors, source=source, torch_layout=torch_layout)
    return model


def write_network(model, config: Mapping[str, Any], out_dir: Path) -> int:
    """Write ``config.json`` (the source's, bookkeeping keys kept) and ``model.pdparams``; returns the
    number of parameters written."""
    import paddle

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "config.json", config)
    state = model.state_dict()
    paddle.save(state, str(out_dir / PADDLE_WEIGHTS))
    return sum(int(np.prod(v.shape)) for v in state.values())


def _write_json(path: Path, values: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(values), f, indent=2, ensure_ascii=False)
        f.write("\n")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise ConversionError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"{what} {path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ConversionError(f"{what} {path} is not a JSON object")
    return values


# ---------------------------------------------------------------- diffusers pipeline folder

def _pipeline_folder_steps(source: Path, out: Path) -> list[ConvertStep]:
    index = _read_json(source / MODEL_INDEX, "model_index.json")
    steps, out_index = [], dict(index)
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
            continue
        folder = source / name
        if not folder.is_dir():
            raise ConversionError(f"model_index.json lists {name!r} but {folder} is missing")
        reference_class = entry[1]
        if is_network_class(reference_class):
            steps.append(ConvertStep(name, _network_folder_step(reference_class, folder, out / name)))
        elif _has_weights(folder):
            out_index[name] = [None, None]  # e.g. safety_checker: a network we do not implement
            steps.append(ConvertStep(name, lambda n=name, c=reference_class: f"{n}: skipped ({c} is not converted)"))
        else:
            steps.append(ConvertStep(name, _copy_step(folder, out / name)))
    steps.append(ConvertStep(MODEL_INDEX, lambda: _write_index(out, out_index)))
    return steps


def _model_folder_steps(source: Path, out: Path) -> list[ConvertStep]:
    """One model folder (config.json + weights): its class is the config's ``_class_name`` (diffusers) or
    ``architectures[0]`` (transformers)."""
    config = _read_json(source / "config.json", "config")
    architectures = config.get("architectures") or [None]
    reference_class = config.get("_class_name") or architectures[0]
    if not is_network_class(reference_class):
        raise ConversionError(f"{source / 'config.json'} names class {reference_class!r}, which has no Paddle "
                              f"network; supported: {sorted(_supported_classes())}")
    return [ConvertStep(source.name, _network_folder_step(reference_class, source, out))]


def _has_weights(folder: Path) -> bool:
    try:
        find_weights_file(folder)
        return True
    except WeightsNotFoundError:
        return False


def _network_folder_step(reference_class: str, folder: Path, out_dir: Path) -> Callable[[], str]:
    def run() -> str:
        config = _read_json(folder / "config.json", f"{folder.name} config")
        checkpoint = read_checkpoint(folder)
        source = Path(checkpoint.source).name
        model = build_network(reference_class, config, checkpoint.tensors, torch_layout=checkpoint.torch_layout,
                              source=checkpoint.source)
        del checkpoint  # the numpy copy is no longer needed while the model is saved
        count = write_network(model, config, out_dir)
        return f"{folder.name}: {reference_class}, {count:,} parameters from {source}"
    return run


def _copy_step(folder: Path, out_dir: Path) -> Callable[[], str]:
    def run() -> str:
        shutil.copytree(folder, out_dir, dirs_exist_ok=True)
        return f"{out_dir.name}: copied from {folder}"
    return run


def _write_index(out: Path, index: Mapping[str, Any]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / MODEL_INDEX, {**index, "_converted_to": "paddle"})
    return f"{MODEL_INDEX}: written"


# ---------------------------------------------------------------- single-file checkpoint

def default_config(component: str) -> dict[str, Any]:
    """SD 1.5's config for ``component`` (unet, vae, text_encoder, scheduler), shipped with the package."""
    text = resources.files("stable_diffusion_chinese").joinpath("assets", "configs",
                                                                 DEFAULT_SINGLE_FILE_CONFIGS[component])
    return json.loads(text.read_text(encoding="utf-8"))


def _single_file_steps(source: Path, out: Path, config_files: Mapping[str, str | os.PathLike | None],
                       tokenizer: Path | None) -> list[ConvertStep]:
    configs = {c: _read_json(Path(p), f"{c} config") if p else default_config(c) for c, p in config_files.items()}
    if tokenizer is not None and not tokenizer.is_dir():
        raise ConversionError(f"tokenizer folder not found: {tokenizer}")
    if tokenizer is None:
        _check_fits_sd1_tokenizer(configs["text_encoder"])
    state: dict[str, Any] = {}

    def read() -> str:
        from .ldm_names import split_ldm_checkpoint

        checkpoint: Checkpoint = read_checkpoint(source)
        state["parts"] = split_ldm_checkpoint(checkpoint.tensors, configs["unet"], configs["vae"])
        state["torch_layout"] = checkpoint.torch_layout
        counts = ", ".join(f"{c} {len(t)}" for c, t in state["parts"].items())
        return f"{source.name}: read ({counts} tensors)"

    def network(component: str) -> Callable[[], str]:
        def run() -> str:
            if not state["parts"][component]:
                raise ConversionError(f"{source.name} has no {component} weights")
            # popped, so the numpy arrays are freed once loaded into the model
            model = build_network(SINGLE_FILE_CLASSES[component], configs[component], state["parts"].pop(component),
                                  torch_layout=state["torch_layout"], source=f"{source.name} ({component})")
            count = write_network(model, configs[component], out / component)
            return f"{component}: {SINGLE_FILE_CLASSES[component]}, {count:,} parameters"
        return run

    def scheduler() -> str:
        (out / "scheduler").mkdir(parents=True, exist_ok=True)
        _write_json(out / "scheduler" / "scheduler_config.json", configs["scheduler"])
        return f"scheduler: {configs['scheduler'].get('_class_name', 'config')} written"

    steps = [ConvertStep("read", read)]
    steps += [ConvertStep(c, network(c)) for c in SINGLE_FILE_CLASSES]
    steps.append(ConvertStep("scheduler", scheduler))
    index: dict[str, Any] = {"_class_name": "StableDiffusionPipeline",
                             "unet": ["diffusers", "UNet2DConditionModel"],
                             "vae": ["diffusers", "AutoencoderKL"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "scheduler": ["diffusers", configs["scheduler"].get("_class_name")],
                             "_converted_from": source.name}
    if tokenizer is not None:
        steps.append(ConvertStep("tokenizer", _copy_step(tokenizer, out / "tokenizer")))
    else:
        steps.append(ConvertStep("tokenizer", lambda: _write_sd1_tokenizer(out / "tokenizer")))
    steps.append(ConvertStep(MODEL_INDEX, lambda: _write_index(out, index)))
    return steps


def _check_fits_sd1_tokenizer(text_encoder_config: Mapping[str, Any]) -> None:
    """The shipped SD 1.x tokenizer gives ids up to 49407: a smaller embedding table would fail only later,
    at generation time, so refuse now."""
    vocab_size = text_encoder_config.get("vocab_size")
    if isinstance(vocab_size, int) and vocab_size < SD1_VOCAB_SIZE:
        raise ConversionError(f"the text_encoder config has vocab_size {vocab_size}, fewer than the "
                              f"{SD1_VOCAB_SIZE} tokens of SD 1.x's CLIP tokenizer used by default; pass the "
                              "checkpoint's own tokenizer folder (tokenizer= / --tokenizer DIR)")


def _write_sd1_tokenizer(out_dir: Path) -> str:
    write_sd1_clip_tokenizer(out_dir)
    return f"tokenizer: SD 1.x CLIP tokenizer ({SD1_VOCAB_SIZE:,} tokens) written from the shipped OpenAI merges"


__all__ = ["ConversionError", "ConvertStep", "convert", "network_class", "build_network",
           "write_network", "default_config"]
