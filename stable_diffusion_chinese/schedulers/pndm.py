"""PNDM / PLMS: Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"
(arXiv:2202.09778). Stable Diffusion uses the PLMS variant (``skip_prk_steps=True``), which starts the
linear multistep method with a two-call pseudo-improved-Euler step instead of pseudo Runge-Kutta steps.
"""
from __future__ import annotations

import numpy as np
import paddle

from .base import Scheduler, SchedulerOutput, as_number, check_tensor, coef
from .schedule import spaced_timesteps, sqrt32

# diffusers 0.42.1 PNDMScheduler.__init__ defaults
PNDM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                     trained_betas=None, skip_prk_steps=False, set_alpha_to_one=False,
                     prediction_type="epsilon", timestep_spacing="leading", steps_offset=0)

PRK_STEPS = 12  # 3 pseudo Runge-Kutta steps x 4 model calls, before PLMS has 3 past epsilons

# fractional weights are float32 like the torch scalars diffusers multiplies with
_F32 = np.float32


class PNDMScheduler(Scheduler):
    diffusers_name = "PNDMScheduler"
    defaults = PNDM_DEFAULTS
    unsupported: dict = {}

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.final_alpha_cumprod = np.float32(1.0) if self.config.set_alpha_to_one else self.alphas_cumprod[0]
        self._reset_state()

    def check_config(self, config) -> None:
        if config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"PNDM supports prediction_type 'epsilon' or 'v_prediction', not {config.prediction_type!r}")

    def _reset_state(self) -> None:
        self.counter = 0
        self.ets: list[paddle.Tensor] = []  # past epsilons
        self.cur_sample: paddle.Tensor | None = None
        self.cur_model_output = None  # running Runge-Kutta sum

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        c = self.config
        self.num_inference_steps = n
        ascending = spaced_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset)[::-1]
        ascending = ascending.astype(np.int64)
        if c.skip_prk_steps:
            # the second-to-last entry is repeated: PLMS evaluates the first timestep's neighbour twice
            self.prk_timesteps = np.array([], dtype=np.int64)
            plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        else:
            # the 4 largest timesteps and their midpoints, each visited as PNDM's Algorithm 2 needs
            half = c.num_train_timesteps // n // 2
            prk = ascending[-4:].repeat(2) + np.tile(np.array([0, half]), 4)
            self.prk_timesteps = prk[:-1].repeat(2)[1:-1][::-1].copy()
            plms = ascending[:-3][::-1]
        self.timesteps = np.concatenate([self.prk_timesteps, plms]).astype(np.int64)
        self._reset_step_tracking()
        self._reset_state()

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        self._require_timesteps()
        check_tensor("model_output", model_output)
        check_tensor("sample", sample)
        t = int(as_number(timestep))
        if self.counter < len(self.prk_timesteps) and not self.config.skip_prk_steps:
            return SchedulerOutput(self._step_prk(model_output, t, sample))
        return SchedulerOutput(self._step_plms(model_output, t, sample))

    def _step_prk(self, e: paddle.Tensor, t: int, sample: paddle.Tensor) -> paddle.Tensor:
        """Pseudo Runge-Kutta (PNDM eq. 13): four epsilons at t, t-d/2, t-d/2, t-d, weights 1/6 1/3 1/3 1/6."""
        stride = self.config.num_train_timesteps // self.num_inference_steps
        prev_t = t - (0 if self.counter % 2 else stride // 2)
        t = int(self.prk_timesteps[self.counter // 4 * 4])
        phase = self.counter % 4
        if phase == 0:
            self.cur_model_output = coef(_F32(1 / 6)) * e
            self.ets.append(e)
            self.cur_sample = sample
        elif phase in (1, 2):
            self.cur_model_output = self.cur_model_output + coef(_F32(1 / 3)) * e
        else:
            e = self.cur_model_output + coef(_F32(1 / 6)) * e
            self.cur_model_output = None
        start = self.cur_sample if self.cur_sample is not None else sample
        self.counter += 1
        return self._transfer(start, t, prev_t, e)

    def _step_plms(self, e: paddle.Tensor, t: int, sample: paddle.Tensor) -> paddle.Tensor:
        """Pseudo linear multistep (PNDM eq. 12), with a pseudo improved Euler start when skipping PRK."""
        if not self.config.skip_prk_steps and len(self.ets) < 3:
            raise ValueError("PNDM without skip_prk_steps must run its 12 Runge-Kutta steps first")
        stride = self.config.num_train_timesteps // self.num_inference_steps
        prev_t = t - stride
        if self.counter != 1:
            self.ets = self.ets[-3:] + [e]
        else:
            # second call of the start: redo the first interval [t+stride -> t] with averaged epsilon
            prev_t, t = t, t + stride
        ets = self.ets
        if len(ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(ets) == 1 and self.counter == 1:
            e = (e + ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        elif len(ets) == 2:
            e = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            e = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            e = coef(_F32(1 / 24)) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
        self.counter += 1
        return self._transfer(sample, t, prev_t, e)

    def _transfer(self, sample: paddle.Tensor, t: int, prev_t: int, e: paddle.Tensor) -> paddle.Tensor:
        """PNDM eq. 9, the transfer part phi(x_t, e, t, t-d):
        x_{t-d} = sqrt(a'/a) x_t - (a' - a) e / (a sqrt(1 - a') + sqrt(a (1 - a) a'))."""
        one = np.float32(1.0)
        a = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b, b_prev = one - a, one - a_prev
        if self.config.prediction_type == "v_prediction":
            e = coef(sqrt32(a)) * e + coef(sqrt32(b)) * sample
        sample_coef = sqrt32(a_prev / a)
        denom = a * sqrt32(b_prev) + sqrt32(a * b * a_prev)
        return coef(sample_coef) * sample - (coef(a_prev - a) * e) / coef(denom)
