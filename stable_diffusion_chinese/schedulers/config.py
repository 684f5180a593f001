"""One typed config for every sampler, reading diffusers' ``scheduler_config.json`` keys.

diffusers gives each scheduler class its own ``__init__`` defaults (DDIM spaces timesteps
"leading", Euler "linspace"; PNDM does not set alpha_bar_prev to one at the end, DDIM does) and,
when a config written for one class is loaded into another, keeps only the keys the new class
accepts and drops keys listed in ``_use_default_values``. :func:`resolve_config` does the same
with a per-class table of defaults, so ``make_scheduler("euler", sd15_pndm_config)`` behaves like
``EulerDiscreteScheduler.from_config(sd15_pndm_config)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ..config import ModelConfig, UnsupportedConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclasses.dataclass
class SchedulerConfig(ModelConfig):
    """Union of the options our samplers implement; each class reads the ones it uses."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"  # linear | scaled_linear | squaredcos_cap_v2
    trained_betas: tuple | None = None
    rescale_betas_zero_snr: bool = False
    prediction_type: str = "epsilon"  # epsilon | v_prediction | sample
    timestep_spacing: str = "leading"  # leading | trailing | linspace
    steps_offset: int = 0
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    variance_type: str | None = "fixed_small"  # DDPM
    skip_prk_steps: bool = False  # PNDM
    use_karras_sigmas: bool = False
    sigma_min: float | None = None  # Karras range override (Euler, UniPC)
    sigma_max: float | None = None
    final_sigmas_type: str = "zero"  # zero | sigma_min
    solver_order: int = 2
    algorithm_type: str = "dpmsolver++"
    solver_type: str = "midpoint"  # DPM-Solver: midpoint | heun; UniPC: bh1 | bh2
    lower_order_final: bool = True
    euler_at_final: bool = False
    lambda_min_clipped: float = -math.inf
    predict_x0: bool = True  # UniPC
    disable_corrector: tuple = ()  # UniPC
    original_inference_steps: int = 50  # LCM
    timestep_scaling: float = 10.0  # LCM


def resolve_config(defaults: Mapping[str, Any], unsupported: Mapping[str, tuple],
                   raw: Mapping[str, Any] | SchedulerConfig | None,
                   overrides: Mapping[str, Any] | None = None) -> SchedulerConfig:
    """Build the config one scheduler class sees.

    ``defaults``: the class's diffusers ``__init__`` defaults for the options we implement.
    ``unsupported``: options of that class we do not implement -> the values we accept (the default).
    ``raw``: a ``scheduler_config.json`` dict (any class) or a SchedulerConfig.
    """
    if isinstance(raw, SchedulerConfig):
        raw = raw.to_dict()
    raw = dict(raw or {})
    implicit = set(raw.pop("_use_default_values", []))
    explicit = {k: v for k, v in raw.items() if k not in implicit}
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"unknown scheduler options {sorted(unknown)} (this scheduler reads {sorted(defaults)})")
    for key, allowed in unsupported.items():
        ModelConfig.require(explicit, key, allowed)
    values = dict(defaults)
    values.update({k: v for k, v in explicit.items() if k in defaults})
    values.update(overrides)
    config = SchedulerConfig.from_dict(values)
    _check_common(config)
    return config


def _check_common(config: SchedulerConfig) -> None:
    ModelConfig.require(vars(config), "prediction_type", PREDICTION_TYPES)
    ModelConfig.require(vars(config), "timestep_spacing", ("leading", "trailing", "linspace"))
    if config.trained_betas is None:
        ModelConfig.require(vars(config), "beta_schedule", ("linear", "scaled_linear", "squaredcos_cap_v2"))
    ModelConfig.require(vars(config), "final_sigmas_type", ("zero", "sigma_min"))
    if not isinstance(config.num_train_timesteps, int) or config.num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int >= 2, got {config.num_train_timesteps!r}")


__all__ = ["SchedulerConfig", "UnsupportedConfigError", "resolve_config", "PREDICTION_TYPES"]
