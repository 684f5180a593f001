"""DDPM ancestral sampling: Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models"."""
from __future__ import annotations

import numpy as np
import paddle

from .alpha_space import EvenlySpacedScheduler, predict_x0_and_eps
from .base import SchedulerOutput, as_number, check_tensor, coef
from .schedule import exp32, log32, sqrt32

# diffusers 0.42.1 DDPMScheduler.__init__ defaults
DDPM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                     trained_betas=None, variance_type="fixed_small", clip_sample=True,
                     prediction_type="epsilon", clip_sample_range=1.0, timestep_spacing="leading",
                     steps_offset=0, rescale_betas_zero_snr=False)

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")


class DDPMScheduler(EvenlySpacedScheduler):
    diffusers_name = "DDPMScheduler"
    defaults = DDPM_DEFAULTS
    adds_noise = True

    def check_config(self, config) -> None:
        if config.variance_type is None:  # diffusers' _get_variance then falls through to fixed_small
            config.variance_type = "fixed_small"
        if config.variance_type not in VARIANCE_TYPES:
            raise ValueError(f"DDPM variance_type {config.variance_type!r} is not supported "
                             f"(supported: {list(VARIANCE_TYPES)}; 'learned*' needs a 2x-channel UNet)")

    def _previous_timestep(self, t: int) -> int:
        i = self._index_for_timestep(t)
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """Posterior q(x_{t-1} | x_t, x_0) of DDPM eqs. 6-7, with x_0 from the model.

        mean = sqrt(a_prev) beta_t / (1 - a_t) x0 + sqrt(alpha_t) (1 - a_prev) / (1 - a_t) x_t,
        var  = (1 - a_prev) / (1 - a_t) beta_t ("fixed_small") or beta_t ("fixed_large"),
        where alpha_t = a_t / a_prev is the one-step alpha between the two sampled timesteps.
        """
        self._require_timesteps()
        check_tensor("model_output", model_output)
        check_tensor("sample", sample)
        c = self.config
        t = int(as_number(timestep))
        prev_t = self._previous_timestep(t)
        one = np.float32(1.0)
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else one
        b_t, b_prev = one - a_t, one - a_prev
        alpha_step = a_t / a_prev
        beta_step = one - alpha_step

        x0, _ = predict_x0_and_eps(model_output, sample, a_t, c.prediction_type)
        if c.clip_sample:
            x0 = paddle.clip(x0, -c.clip_sample_range, c.clip_sample_range)
        x0_coef = sqrt32(a_prev) * beta_step / b_t
        xt_coef = sqrt32(alpha_step) * b_prev / b_t
        prev_sample = coef(x0_coef) * x0 + coef(xt_coef) * sample
        if t > 0:
            prev_sample = prev_sample + coef(self._std(b_prev, b_t, beta_step)) * self._noise_like(sample, noise)
        return SchedulerOutput(prev_sample, x0)

    def _std(self, b_prev: np.float32, b_t: np.float32, beta_step: np.float32) -> np.float32:
        small = max(b_prev / b_t * beta_step, np.float32(1e-20))  # clamped so log() stays finite
        if self.config.variance_type == "fixed_small":
            return sqrt32(small)
        if self.config.variance_type == "fixed_small_log":
            return exp32(np.float32(0.5) * log32(small))
        return sqrt32(beta_step)  # fixed_large
