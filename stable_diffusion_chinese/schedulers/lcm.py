"""LCM multistep sampling: Luo et al. 2023, "Latent Consistency Models" (arXiv:2310.04378), Algorithm 3.

Each step maps x_t to the consistency function's clean estimate
f(x_t, t) = c_skip(t) x_t + c_out(t) x0(x_t, t) and, except after the last step, re-noises it to the
next (lower) timestep with fresh noise.
"""
from __future__ import annotations

import numpy as np
import paddle

from .alpha_space import predict_x0_and_eps
from .base import Scheduler, SchedulerOutput, as_number, coef
from .schedule import sqrt32

# diffusers 0.42.1 LCMScheduler.__init__ defaults
LCM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    trained_betas=None, original_inference_steps=50, clip_sample=False, clip_sample_range=1.0,
                    set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon", timestep_spacing="leading",
                    timestep_scaling=10.0, rescale_betas_zero_snr=False)

SIGMA_DATA = np.float32(0.5)  # consistency-model boundary condition (Song et al. 2023, sec. 3)


class LCMScheduler(Scheduler):
    diffusers_name = "LCMScheduler"
    defaults = LCM_DEFAULTS
    adds_noise = True

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.final_alpha_cumprod = np.float32(1.0) if self.config.set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int, strength: float = 1.0) -> None:
        """``num_inference_steps`` evenly spaced picks from the distillation schedule of
        ``original_inference_steps`` skipping-steps (the part of it below ``strength`` for img2img)."""
        n = self._check_num_steps(num_inference_steps)
        c = self.config
        original = c.original_inference_steps
        if original > c.num_train_timesteps:
            raise ValueError(f"original_inference_steps={original} exceeds num_train_timesteps={c.num_train_timesteps}")
        k = c.num_train_timesteps // original
        origin = np.asarray(list(range(1, int(original * strength) + 1))) * k - 1
        if len(origin) // n < 1:
            raise ValueError(f"LCM: original_inference_steps x strength = {original} x {strength} gives "
                             f"{len(origin)} timesteps, fewer than num_inference_steps={n}")
        if n > original:
            raise ValueError(f"LCM: num_inference_steps={n} exceeds original_inference_steps={original}")
        origin = origin[::-1]
        picks = np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)
        self.timesteps = origin[picks].astype(np.int64)
        self.num_inference_steps = n
        self._reset_step_tracking()

    def img2img_timesteps(self, strength: float) -> np.ndarray:
        """LCM folds ``strength`` into the schedule itself (diffusers' LCM img2img pipeline passes it to
        ``set_timesteps``): all returned steps are run."""
        n = self._require_timesteps()
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.set_timesteps(n, strength=strength)
        return self.timesteps

    def _boundary_scalings(self, t: int) -> tuple[np.float32, np.float32]:
        """c_skip = sigma_data^2 / (s^2 + sigma_data^2), c_out = s / sqrt(s^2 + sigma_data^2),
        s = t * timestep_scaling (LCM eq. 4 with the discrete-time scaling of the LCM code)."""
        scaled = np.float32(t) * np.float32(self.config.timestep_scaling)
        denom = scaled * scaled + SIGMA_DATA * SIGMA_DATA
        return SIGMA_DATA * SIGMA_DATA / denom, scaled / sqrt32(denom)

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """One loop of LCM Algorithm 3: f(x_t, t) = c_skip(t) x_t + c_out(t) x0 (eq. 4), then, but for
        the last step, x_prev = sqrt(a_prev) f + sqrt(1 - a_prev) z at the next timestep."""
        i = self._begin_step(model_output, sample, timestep)
        c = self.config
        t = int(as_number(timestep))
        prev_t = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else t
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        c_skip, c_out = self._boundary_scalings(t)
        x0, _ = predict_x0_and_eps(model_output, sample, a_t, c.prediction_type)
        if c.clip_sample:
            x0 = paddle.clip(x0, -c.clip_sample_range, c.clip_sample_range)
        denoised = coef(c_out) * x0 + coef(c_skip) * sample
        if i != self.num_inference_steps - 1:
            # re-noise to the next timestep: x_prev = sqrt(a_prev) f + sqrt(1 - a_prev) z
            noise = self._noise_like(sample, noise)
            prev_sample = coef(sqrt32(a_prev)) * denoised + coef(sqrt32(np.float32(1.0) - a_prev)) * noise
        else:
            prev_sample = denoised
        return self._end_step(prev_sample, denoised)
