"""DDIM: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models" (arXiv:2010.02502)."""
from __future__ import annotations

import numpy as np
import paddle

from .alpha_space import EvenlySpacedScheduler, predict_x0_and_eps
from .base import SchedulerOutput, as_number, check_tensor, coef
from .schedule import sqrt32

# diffusers 0.42.1 DDIMScheduler.__init__ defaults
DDIM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                     trained_betas=None, clip_sample=True, set_alpha_to_one=True, steps_offset=0,
                     prediction_type="epsilon", clip_sample_range=1.0, timestep_spacing="leading",
                     rescale_betas_zero_snr=False)


class DDIMScheduler(EvenlySpacedScheduler):
    diffusers_name = "DDIMScheduler"
    defaults = DDIM_DEFAULTS

    def uses_step_noise(self, eta: float = 0.0) -> bool:
        return eta > 0  # eq. 16: sigma_t = 0 at eta = 0, the deterministic DDIM

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        # alpha_bar "before" the first training step: 1 (a clean image) or alpha_bar_0
        self.final_alpha_cumprod = np.float32(1.0) if self.config.set_alpha_to_one else self.alphas_cumprod[0]

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """DDIM eq. 12: x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z, with
        s = eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev) (eq. 16)."""
        n = self._require_timesteps()
        check_tensor("model_output", model_output)
        check_tensor("sample", sample)
        c = self.config
        t = int(as_number(timestep))
        # previous timestep one stride back, as diffusers computes it for every spacing
        prev_t = t - c.num_train_timesteps // n
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        x0, eps = predict_x0_and_eps(model_output, sample, a_t, c.prediction_type)
        if c.clip_sample:
            x0 = paddle.clip(x0, -c.clip_sample_range, c.clip_sample_range)

        one = np.float32(1.0)
        variance = ((one - a_prev) / (one - a_t)) * (one - a_t / a_prev)
        std = np.float32(eta) * sqrt32(variance)
        direction = coef(sqrt32(one - a_prev - std * std)) * eps
        prev_sample = coef(sqrt32(a_prev)) * x0 + direction
        if eta > 0:
            prev_sample = prev_sample + coef(std) * self._noise_like(sample, noise)
        return SchedulerOutput(prev_sample, x0)
