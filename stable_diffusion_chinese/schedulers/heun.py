"""Heun's 2nd-order sampler: Karras et al. 2022 (EDM), Algorithm 1 (k-diffusion ``sample_heun``).

Each interval sigma_i -> sigma_{i+1} takes two model calls, so ``timesteps`` lists every interior
timestep twice and the pipeline calls ``step`` once per entry (diffusers' convention): the first call
is an Euler predictor, the second the trapezoidal corrector.
"""
from __future__ import annotations

import numpy as np
import paddle

from .base import SchedulerOutput, coef
from .sigma_space import SigmaScheduler, predict_x0_sigma

# diffusers 0.42.1 HeunDiscreteScheduler.__init__ defaults
HEUN_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                     trained_betas=None, prediction_type="epsilon", use_karras_sigmas=False,
                     clip_sample=False, clip_sample_range=1.0, timestep_spacing="linspace", steps_offset=0)


class HeunDiscreteScheduler(SigmaScheduler):
    diffusers_name = "HeunDiscreteScheduler"
    defaults = HEUN_DEFAULTS
    unsupported = {"use_exponential_sigmas": (False,), "use_beta_sigmas": (False,)}
    order = 2

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        self.num_inference_steps = n
        timesteps, sigmas = self._discrete_sigmas(n)
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        # [s0, s1, s1, s2, s2, ..., s_{n-1}, s_{n-1}, 0] and [t0, t1, t1, ..., t_{n-1}, t_{n-1}]
        self.sigmas = np.concatenate([sigmas[:1], sigmas[1:-1].repeat(2), sigmas[-1:]])
        self.timesteps = np.concatenate([timesteps[:1], timesteps[1:].repeat(2)]).astype(np.float32)
        self._reset_step_tracking()
        self._first_derivative: paddle.Tensor | None = None
        self._dt: np.float32 | None = None
        self._start_sample: paddle.Tensor | None = None

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """Predictor: x' = x_i + (sigma_{i+1} - sigma_i) d_i. Corrector (the next call, at x'):
        x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_{i+1}) / 2 (EDM Algorithm 1, lines 5-8)."""
        i = self._begin_step(model_output, sample, timestep)
        predictor = self._dt is None
        sigma, sigma_next = (self.sigmas[i], self.sigmas[i + 1]) if predictor else (self.sigmas[i - 1], self.sigmas[i])
        sigma_at_sample = sigma if predictor else sigma_next
        x0 = predict_x0_sigma(model_output, sample, sigma_at_sample, self.config.prediction_type)
        if self.config.clip_sample:
            x0 = paddle.clip(x0, -self.config.clip_sample_range, self.config.clip_sample_range)
        derivative = (sample - x0) / coef(sigma_at_sample)
        if predictor:
            self._first_derivative, self._dt, self._start_sample = derivative, sigma_next - sigma, sample
            prev_sample = sample + derivative * coef(self._dt)
        else:
            derivative = (self._first_derivative + derivative) / 2
            prev_sample = self._start_sample + derivative * coef(self._dt)
            self._first_derivative = self._dt = self._start_sample = None
        return self._end_step(prev_sample, x0)
