"""Build a sampler by common name, by diffusers class name, or from a model folder's scheduler config."""
from __future__ import annotations

import os
from typing import Any, Mapping

from .base import Scheduler, read_scheduler_config
from .config import SchedulerConfig
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .euler import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from .heun import HeunDiscreteScheduler
from .lcm import LCMScheduler
from .lms import LMSDiscreteScheduler
from .pndm import PNDMScheduler
from .unipc import UniPCMultistepScheduler

# common name -> (class, options forced on top of the model's scheduler config)
SCHEDULERS: dict[str, tuple[type[Scheduler], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "plms": (PNDMScheduler, {"skip_prk_steps": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                              "use_karras_sigmas": False}),
    "dpm++2m_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                     "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
}

# diffusers ``_class_name`` -> class
CLASSES: dict[str, type[Scheduler]] = {cls.diffusers_name: cls for cls, _ in SCHEDULERS.values()}


def valid_names() -> list[str]:
    return list(SCHEDULERS) + sorted(CLASSES)


def make_scheduler(name_or_config: str | Mapping[str, Any] | SchedulerConfig,
                   base_config: Mapping[str, Any] | SchedulerConfig | str | os.PathLike | None = None
                   ) -> Scheduler:
    """A sampler from a common name (``"euler_a"``), a diffusers class name (``"PNDMScheduler"``) or a
    ``scheduler_config.json`` dict (its ``_class_name`` picks the class).

    ``base_config`` is the model's scheduler config (dict, or a folder/file holding
    ``scheduler_config.json``); it supplies the beta schedule and spacing the model was trained with,
    exactly as diffusers' ``SomeScheduler.from_config(pipe.scheduler.config)``.
    """
    if isinstance(base_config, (str, os.PathLike)):
        base_config = read_scheduler_config(base_config)
    if isinstance(name_or_config, Mapping):
        name = name_or_config.get("_class_name")
        if name is None:
            raise ValueError("scheduler config has no '_class_name'; pass a scheduler name "
                             f"({', '.join(valid_names())})")
        if base_config is not None:
            raise TypeError("a scheduler config dict is complete on its own; pass base_config only with a name")
        cls, overrides = _lookup(name)
        return cls(name_or_config, **overrides)
    if not isinstance(name_or_config, str):
        raise TypeError(f"expected a scheduler name or a config dict, got {type(name_or_config).__name__}")
    cls, overrides = _lookup(name_or_config)
    return cls(base_config, **overrides)


def scheduler_name(scheduler: Scheduler) -> str:
    """The common name that rebuilds ``scheduler`` (``"dpm++2m_karras"``), else its diffusers class name."""
    for name, (cls, forced) in SCHEDULERS.items():
        if type(scheduler) is cls and all(getattr(scheduler.config, k) == v for k, v in forced.items()):
            return name
    return scheduler.diffusers_name


def from_pretrained(folder: str | os.PathLike) -> Scheduler:
    """The sampler a diffusers folder names: ``folder/scheduler_config.json`` or
    ``folder/scheduler/scheduler_config.json``."""
    return make_scheduler(read_scheduler_config(folder))


def _lookup(name: str) -> tuple[type[Scheduler], dict[str, Any]]:
    key = name.strip()
    if key.lower() in SCHEDULERS:
        return SCHEDULERS[key.lower()]
    if key in CLASSES:
        return CLASSES[key], {}
    raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(valid_names())}")

