"""Shared pieces of the exponential-integrator multistep solvers (DPM-Solver++, UniPC).

They work with the VP quantities of each sampled sigma: alpha_t = 1/sqrt(sigma^2+1),
sigma_t = sigma alpha_t and the half log-SNR lambda_t = log(alpha_t) - log(sigma_t), keep the last
``solver_order`` model outputs, and take the sample and model input unscaled (init sigma 1).
"""
from __future__ import annotations

import numpy as np
import paddle

from . import schedule
from .base import Scheduler, check_tensor, per_sample, coef
from .schedule import log32, sqrt32


def alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
    """(alpha_t, sigma_t) of x_vp = alpha_t x_0 + sigma_t eps for the sigma-space noise level sigma."""
    alpha = np.float32(1.0) / sqrt32(sigma * sigma + np.float32(1.0))
    return alpha, sigma * alpha


def half_log_snr(sigma: np.float32) -> np.float32:
    """lambda = log(alpha_t) - log(sigma_t); +inf at sigma = 0."""
    alpha, sig = alpha_sigma(sigma)
    return log32(alpha) - log32(sig)


class MultistepScheduler(Scheduler):
    floors_zero_snr = True

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.sigma_table = schedule.sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.sigmas: np.ndarray | None = None

    def _reset_solver_state(self) -> None:
        self._reset_step_tracking()
        self.model_outputs: list[paddle.Tensor | None] = [None] * self.config.solver_order
        self.lower_order_nums = 0

    def _remember(self, converted: paddle.Tensor) -> None:
        self.model_outputs = self.model_outputs[1:] + [converted]

    def _index_for_timestep(self, timestep) -> int:
        """As the base rule, but a timestep missing from the schedule means the last step (diffusers)."""
        try:
            return super()._index_for_timestep(timestep)
        except ValueError:
            return len(self.timesteps) - 1

    def _to_x0(self, model_output: paddle.Tensor, sample: paddle.Tensor, sigma: np.float32) -> paddle.Tensor:
        """Data prediction x_0 from the model output (the "++" data-prediction form)."""
        alpha_t, sigma_t = alpha_sigma(sigma)
        kind = self.config.prediction_type
        if kind == "epsilon":
            return (sample - coef(sigma_t) * model_output) / coef(alpha_t)
        if kind == "v_prediction":
            return coef(alpha_t) * sample - coef(sigma_t) * model_output
        return model_output

    def _to_eps(self, model_output: paddle.Tensor, sample: paddle.Tensor, sigma: np.float32) -> paddle.Tensor:
        """Noise prediction epsilon from the model output."""
        alpha_t, sigma_t = alpha_sigma(sigma)
        kind = self.config.prediction_type
        if kind == "epsilon":
            return model_output
        if kind == "v_prediction":
            return coef(alpha_t) * model_output + coef(sigma_t) * sample
        return (sample - coef(alpha_t) * model_output) / coef(sigma_t)

    def add_noise(self, original_samples: paddle.Tensor, noise: paddle.Tensor, timesteps) -> paddle.Tensor:
        """x = alpha_t x_0 + sigma_t eps at the scheduled sigma of ``timesteps``."""
        check_tensor("original_samples", original_samples)
        check_tensor("noise", noise)
        self._require_timesteps()
        sigma = self.sigmas[self._indices_for_add_noise(timesteps)]
        alpha = np.float32(1.0) / sqrt32(sigma * sigma + np.float32(1.0))
        return per_sample(alpha, original_samples) * original_samples + \
            per_sample(sigma * alpha, original_samples) * noise
