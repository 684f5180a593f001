"""The sampler contract every scheduler follows, so a pipeline never asks which one it holds.

    scheduler.set_timesteps(num_inference_steps)
    latents = noise * scheduler.init_noise_sigma          # or: timesteps = scheduler.img2img_timesteps(strength)
    for t in scheduler.timesteps:                          #     latents = scheduler.add_noise(x0, noise, timesteps[:1])
        model_input = scheduler.scale_model_input(latents, t)
        eps = unet(model_input, t)
        latents = scheduler.step(eps, t, latents, noise=fresh_noise, eta=eta).prev_sample

This is diffusers' contract (``SchedulerMixin``) with one change: samplers that inject noise
(DDPM, DDIM with eta > 0, Euler ancestral, LCM) take the noise tensor from the caller, so the
pipeline owns all randomness; without it they draw ``paddle.randn``. ``eta`` is read by DDIM and
ignored elsewhere, as diffusers pipelines do.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import paddle

from ..json_files import read_json_object
from . import schedule
from .config import SchedulerConfig, resolve_config

CONFIG_NAME = "scheduler_config.json"


@dataclasses.dataclass
class SchedulerOutput:
    """``prev_sample`` is x_{t-1}; ``pred_original_sample`` the x_0 estimate where the sampler has one."""

    prev_sample: paddle.Tensor
    pred_original_sample: paddle.Tensor | None = None


class Scheduler:
    """Base class: config handling, the beta schedule, step bookkeeping and img2img helpers."""

    #: the diffusers class this one reproduces (``_class_name`` in scheduler_config.json)
    diffusers_name: ClassVar[str] = ""
    #: diffusers' ``__init__`` defaults of this class for the options we implement
    defaults: ClassVar[dict[str, Any]] = {}
    #: options of the diffusers class we do not implement -> accepted values
    unsupported: ClassVar[dict[str, tuple]] = {"thresholding": (False,)}
    #: option -> {a sibling sampler's value: this class's}: the renames diffusers' ``__init__`` applies
    #: so a config written for one multistep solver loads into another
    option_aliases: ClassVar[dict[str, dict[str, str]]] = {}
    #: timestep entries per sampling step (Heun lists interior timesteps twice: 2); img2img skips
    #: ``t_start * order`` entries
    order: ClassVar[int] = 1
    #: sigma-space samplers need a finite sigma_T: with zero-terminal-SNR betas diffusers sets
    #: alpha_bar_T = 2^-24 instead of 0
    floors_zero_snr: ClassVar[bool] = False
    #: whether ``step`` adds fresh noise; the pipeline then draws it from its per-image generators
    adds_noise: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | SchedulerConfig | None = None, **overrides: Any):
        self.config = resolve_config(self.defaults, self.unsupported, config, overrides)
        self._rename_aliased_options(self.config)
        self.check_config(self.config)
        c = self.config
        betas = schedule.make_betas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end,
                                    c.trained_betas)
        if c.rescale_betas_zero_snr:
            betas = schedule.rescale_zero_terminal_snr(betas)
        self.betas = betas
        self.alphas_cumprod = schedule.alphas_cumprod_from_betas(betas)
        if c.rescale_betas_zero_snr and self.floors_zero_snr:
            self.alphas_cumprod[-1] = np.float32(2.0 ** -24)
        self.num_inference_steps: int | None = None
        self.timesteps: np.ndarray | None = None
        self._begin_index: int | None = None
        self._step_index: int | None = None

    # ------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SchedulerConfig | None = None, **overrides: Any):
        return cls(config, **overrides)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **overrides: Any):
        """Read ``scheduler_config.json`` from ``folder`` (or ``folder/scheduler``)."""
        return cls(read_scheduler_config(folder), **overrides)

    def config_dict(self) -> dict[str, Any]:
        """``_class_name`` and the options this class reads: diffusers' ``scheduler.config``, usable as
        ``make_scheduler(other_name, base_config=...)``."""
        return {"_class_name": self.diffusers_name,
                **{k: v for k, v in self.config.to_dict().items() if k in self.defaults}}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / CONFIG_NAME, "w", encoding="utf-8") as f:
            json.dump(self.config_dict(), f, indent=2)

    def check_config(self, config: SchedulerConfig) -> None:
        """Reject option values this sampler does not implement. Override per sampler."""

    def _rename_aliased_options(self, config: SchedulerConfig) -> None:
        """Rewrite the values listed in ``option_aliases`` to this class's names, before checking them."""
        for option, aliases in self.option_aliases.items():
            value = getattr(config, option)
            setattr(config, option, aliases.get(value, value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.num_inference_steps}, config={self.config})"

    # ------------------------------------------------------------ the contract
    @property
    def init_noise_sigma(self) -> float:
        """Std of the initial latent noise (1 for alpha-parameterised samplers)."""
        return 1.0

    def set_timesteps(self, num_inference_steps: int) -> None:
        raise NotImplementedError

    def scale_model_input(self, sample: paddle.Tensor, timestep=None) -> paddle.Tensor:
        """What the model sees at ``timestep``; identity unless the sampler works in sigma space."""
        return sample

    def uses_step_noise(self, eta: float = 0.0) -> bool:
        """Whether the next ``step`` call with this ``eta`` reads its ``noise`` argument."""
        return self.adds_noise

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        raise NotImplementedError

    def add_noise(self, original_samples: paddle.Tensor, noise: paddle.Tensor, timesteps) -> paddle.Tensor:
        """Forward diffusion q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (DDPM eq. 4)."""
        check_tensor("original_samples", original_samples)
        check_tensor("noise", noise)
        alpha_bar = self.alphas_cumprod[_timestep_indices(timesteps)]
        a = per_sample(schedule.sqrt32(alpha_bar), original_samples)
        s = per_sample(schedule.sqrt32(np.float32(1.0) - alpha_bar), original_samples)
        return a * original_samples + s * noise

    def img2img_timesteps(self, strength: float) -> np.ndarray:
        """Call after ``set_timesteps``: the tail of the schedule an img2img run with ``strength`` walks.

        As diffusers' img2img pipelines: ``int(n * strength)`` of the ``n`` steps are run; the first
        returned timestep is the noise level for :meth:`add_noise`. Also tells the sampler where it
        starts (diffusers' ``set_begin_index``).
        """
        n = self._require_timesteps()
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        t_start = max(n - min(int(n * strength), n), 0)
        self._begin_index = t_start * self.order
        return self.timesteps[t_start * self.order:]

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    @property
    def step_index(self) -> int | None:
        return self._step_index

    # ------------------------------------------------------------ helpers for subclasses
    def _require_timesteps(self) -> int:
        if self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}: call set_timesteps(num_inference_steps) first")
        return self.num_inference_steps

    def _check_num_steps(self, num_inference_steps: int) -> int:
        if not isinstance(num_inference_steps, (int, np.integer)) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        if num_inference_steps > self.config.num_train_timesteps:
            raise ValueError(f"num_inference_steps={num_inference_steps} exceeds num_train_timesteps="
                             f"{self.config.num_train_timesteps}")
        return int(num_inference_steps)

    def _reset_step_tracking(self) -> None:
        self._step_index = None
        self._begin_index = None

    def _index_for_timestep(self, timestep) -> int:
        """Position of ``timestep`` in the schedule; the second hit if it appears twice (Heun,
        img2img starting mid-schedule), as diffusers."""
        value = as_number(timestep)
        hits = np.flatnonzero(self.timesteps == np.asarray(value, dtype=self.timesteps.dtype))
        if len(hits) == 0:
            raise ValueError(f"timestep {value} is not in this schedule {self.timesteps.tolist()}")
        return int(hits[1] if len(hits) > 1 else hits[0])

    def _init_step_index(self, timestep) -> int:
        self._require_timesteps()
        if self._step_index is None:
            self._step_index = self._begin_index if self._begin_index is not None \
                else self._index_for_timestep(timestep)
        return self._step_index

    def _begin_step(self, model_output: paddle.Tensor, sample: paddle.Tensor, timestep) -> int:
        """Opening of every sampler that walks its schedule by index: check the inputs and return
        the position of this step (found from ``timestep`` on the first call)."""
        check_tensor("model_output", model_output)
        check_tensor("sample", sample)
        return self._init_step_index(timestep)

    def _end_step(self, prev_sample: paddle.Tensor,
                  pred_original_sample: paddle.Tensor | None = None) -> SchedulerOutput:
        """Close of such a step: move to the next position and hand back the result."""
        self._step_index += 1
        return SchedulerOutput(prev_sample, pred_original_sample)

    def _indices_for_add_noise(self, timesteps) -> list[int]:
        """Schedule positions of ``timesteps`` as diffusers' sigma-space ``add_noise`` picks them."""
        values = np.atleast_1d(np.asarray(_as_numbers(timesteps)))
        if self._begin_index is None:
            return [self._index_for_timestep(v) for v in values]
        start = self._step_index if self._step_index is not None else self._begin_index
        return [start] * len(values)

    def _noise_like(self, sample: paddle.Tensor, noise: paddle.Tensor | None) -> paddle.Tensor:
        if noise is None:
            return paddle.randn(sample.shape, dtype=sample.dtype)
        check_tensor("noise", noise)
        if list(noise.shape) != list(sample.shape):
            raise ValueError(f"noise shape {list(noise.shape)} != sample shape {list(sample.shape)}")
        return noise


# ---------------------------------------------------------------- module helpers


def read_scheduler_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``scheduler_config.json`` of a scheduler folder, a model root (``scheduler/``), or the file."""
    path = Path(folder)
    for candidate in (path, path / CONFIG_NAME, path / "scheduler" / CONFIG_NAME):
        if candidate.is_file():
            return read_json_object(candidate)
    raise FileNotFoundError(f"no {CONFIG_NAME} in {path} or {path / 'scheduler'}")


def check_tensor(name: str, value) -> None:
    if not isinstance(value, paddle.Tensor):
        raise TypeError(f"{name} must be a paddle.Tensor, got {type(value).__name__}")


def as_number(timestep):
    if isinstance(timestep, paddle.Tensor):
        if timestep.size != 1:
            raise ValueError(f"expected one timestep, got a tensor of shape {list(timestep.shape)}")
        return timestep.numpy().reshape(()).item()
    return np.asarray(timestep).reshape(()).item()


def _as_numbers(timesteps):
    if isinstance(timesteps, paddle.Tensor):
        return timesteps.numpy()
    return timesteps


def _timestep_indices(timesteps) -> np.ndarray:
    return np.atleast_1d(np.asarray(_as_numbers(timesteps))).astype(np.int64)


def per_sample(values: np.ndarray, like: paddle.Tensor) -> paddle.Tensor:
    """float32 per-batch coefficients shaped to broadcast over ``like`` ([B, 1, 1, ...])."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    shape = [len(values)] + [1] * (len(like.shape) - 1)
    return paddle.to_tensor(values.reshape(shape), dtype=like.dtype)


def coef(x) -> float:
    """A float32 scalar as the Python float Paddle multiplies with (exactly the float32 value)."""
    return float(np.float32(x))
