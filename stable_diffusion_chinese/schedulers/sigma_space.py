"""Shared pieces of the samplers that integrate the probability-flow ODE in sigma space
(Karras et al. 2022, "EDM": x = x_0 + sigma * eps, model input x / sqrt(sigma^2 + 1)):
LMS, Euler, Euler ancestral, Heun.
"""
from __future__ import annotations

import numpy as np
import paddle

from . import schedule
from .base import Scheduler, check_tensor, per_sample, coef
from .schedule import sqrt32


def predict_x0_sigma(model_output: paddle.Tensor, sample: paddle.Tensor, sigma: np.float32,
                     prediction_type: str) -> paddle.Tensor:
    """x_0 from the model output for x = x_0 + sigma eps.

    v-prediction in sigma space: x_0 = -sigma / sqrt(sigma^2+1) v + x / (sigma^2 + 1)
    (Salimans & Ho 2022 with alpha = 1/sqrt(sigma^2+1), sigma_vp = sigma alpha, x_vp = alpha x).
    """
    if prediction_type == "epsilon":
        return sample - coef(sigma) * model_output
    if prediction_type == "v_prediction":
        var1 = sigma * sigma + np.float32(1.0)
        return model_output * coef(-sigma / sqrt32(var1)) + sample / coef(var1)
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


class SigmaScheduler(Scheduler):
    """Base for samplers whose state is a float32 ``sigmas`` array walked by a step index."""

    #: Karras range taken from the config's sigma_min/sigma_max when set (Euler reads them)
    reads_sigma_range = False

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.sigmas: np.ndarray | None = None
        self.sigma_table = schedule.sigmas_from_alphas_cumprod(self.alphas_cumprod)

    @property
    def init_noise_sigma(self) -> float:
        self._require_timesteps()
        sigma_max = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return float(sigma_max)
        return float(sqrt32(sigma_max * sigma_max + np.float32(1.0)))

    def scale_model_input(self, sample: paddle.Tensor, timestep=None) -> paddle.Tensor:
        """The model was trained on x_vp = x / sqrt(sigma^2 + 1)."""
        check_tensor("sample", sample)
        sigma = self.sigmas[self._init_step_index(timestep)]
        return sample / coef(sqrt32(sigma * sigma + np.float32(1.0)))

    def add_noise(self, original_samples: paddle.Tensor, noise: paddle.Tensor, timesteps) -> paddle.Tensor:
        """x = x_0 + sigma eps."""
        check_tensor("original_samples", original_samples)
        check_tensor("noise", noise)
        self._require_timesteps()
        sigma = per_sample(self.sigmas[self._indices_for_add_noise(timesteps)], original_samples)
        return original_samples + noise * sigma

    def _discrete_sigmas(self, num_inference_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Timesteps (float32) and sigmas (float64, without the final one) of the Euler family."""
        c = self.config
        timesteps = schedule.spaced_timesteps(c.timestep_spacing, c.num_train_timesteps, num_inference_steps,
                                              c.steps_offset, round_linspace=False).astype(np.float32)
        sigmas = schedule.sigma_at(timesteps, self.sigma_table)
        if c.use_karras_sigmas:
            sigma_min = c.sigma_min if self.reads_sigma_range and c.sigma_min is not None else sigmas[-1].item()
            sigma_max = c.sigma_max if self.reads_sigma_range and c.sigma_max is not None else sigmas[0].item()
            sigmas = schedule.karras_sigmas(sigma_min, sigma_max, num_inference_steps)
            timesteps = schedule.sigma_to_t(sigmas, schedule.log_sigma_table(self.sigma_table)).astype(np.float32)
        return timesteps, sigmas

    def _final_sigma(self) -> np.float32:
        """Sigma after the last step: 0 (a clean sample) or sigma at t=0 (``final_sigmas_type``)."""
        if self.config.final_sigmas_type == "sigma_min":
            a0 = self.alphas_cumprod[0]
            return sqrt32((np.float32(1.0) - a0) / a0)
        return np.float32(0.0)
