"""Euler and Euler-ancestral samplers of Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models" (EDM, arXiv:2206.00364), as in k-diffusion's ``sample_euler``
and ``sample_euler_ancestral``.
"""
from __future__ import annotations

import numpy as np
import paddle

from .base import SchedulerOutput, coef
from .schedule import sqrt32
from .sigma_space import SigmaScheduler, predict_x0_sigma

# diffusers 0.42.1 EulerDiscreteScheduler.__init__ defaults
EULER_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                      trained_betas=None, prediction_type="epsilon", use_karras_sigmas=False,
                      sigma_min=None, sigma_max=None, timestep_spacing="linspace", steps_offset=0,
                      rescale_betas_zero_snr=False, final_sigmas_type="zero")

# diffusers 0.42.1 EulerAncestralDiscreteScheduler.__init__ defaults
EULER_ANCESTRAL_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                beta_schedule="linear", trained_betas=None, prediction_type="epsilon",
                                timestep_spacing="linspace", steps_offset=0, rescale_betas_zero_snr=False)


class EulerDiscreteScheduler(SigmaScheduler):
    diffusers_name = "EulerDiscreteScheduler"
    defaults = EULER_DEFAULTS
    unsupported = {"use_exponential_sigmas": (False,), "use_beta_sigmas": (False,),
                   "interpolation_type": ("linear",), "timestep_type": ("discrete",)}
    reads_sigma_range = True
    floors_zero_snr = True

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        self.num_inference_steps = n
        self.timesteps, sigmas = self._discrete_sigmas(n)
        self.sigmas = np.concatenate([sigmas, [self._final_sigma()]]).astype(np.float32)
        self._reset_step_tracking()

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """EDM Algorithm 2 without churn: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i,
        d_i = (x_i - x0) / sigma_i (eq. 4)."""
        i = self._begin_step(model_output, sample, timestep)
        sigma = self.sigmas[i]
        x0 = predict_x0_sigma(model_output, sample, sigma, self.config.prediction_type)
        derivative = (sample - x0) / coef(sigma)
        dt = self.sigmas[i + 1] - sigma
        return self._end_step(sample + derivative * coef(dt), x0)


class EulerAncestralDiscreteScheduler(SigmaScheduler):
    diffusers_name = "EulerAncestralDiscreteScheduler"
    defaults = EULER_ANCESTRAL_DEFAULTS
    adds_noise = True
    unsupported: dict = {}
    floors_zero_snr = True

    def check_config(self, config) -> None:
        if config.prediction_type == "sample":
            raise ValueError("Euler ancestral supports prediction_type 'epsilon' or 'v_prediction', not 'sample'")

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        self.num_inference_steps = n
        self.timesteps, sigmas = self._discrete_sigmas(n)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self._reset_step_tracking()

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """Ancestral Euler step: split the move sigma_i -> sigma_{i+1} into a deterministic Euler step
        down to sigma_down and fresh noise of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_{i+1}^2
        and sigma_up = sigma_{i+1} sqrt(1 - sigma_{i+1}^2 / sigma_i^2) (k-diffusion
        ``get_ancestral_step``, the DDPM posterior variance in sigma space)."""
        i = self._begin_step(model_output, sample, timestep)
        sigma_from, sigma_to = self.sigmas[i], self.sigmas[i + 1]
        x0 = predict_x0_sigma(model_output, sample, sigma_from, self.config.prediction_type)
        from2, to2 = sigma_from * sigma_from, sigma_to * sigma_to
        sigma_up = sqrt32(to2 * (from2 - to2) / from2)
        # clamped: rounding can make sigma_up^2 exceed sigma_to^2 by an ulp (diffusers then yields NaN)
        sigma_down = sqrt32(max(to2 - sigma_up * sigma_up, np.float32(0.0)))
        derivative = (sample - x0) / coef(sigma_from)
        prev_sample = sample + derivative * coef(sigma_down - sigma_from)
        prev_sample = prev_sample + self._noise_like(sample, noise) * coef(sigma_up)
        return self._end_step(prev_sample, x0)
