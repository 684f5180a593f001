"""DPM-Solver++ multistep (2M by default): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
Sampling of Diffusion Probabilistic Models" (arXiv:2211.01095), data-prediction form.

With h = lambda_t - lambda_s (change of half log-SNR over the step) the first-order update is
DDIM, x_t = (sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s; higher orders add finite differences of
the previous x0 predictions (Algorithm 2 for order 2).
"""
from __future__ import annotations

import numpy as np
import paddle

from . import schedule
from .base import SchedulerOutput, coef
from .multistep import MultistepScheduler, alpha_sigma, half_log_snr
from .schedule import exp32, log32, sqrt32

# diffusers 0.42.1 DPMSolverMultistepScheduler.__init__ defaults (for the options we implement)
DPM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, solver_order=2, prediction_type="epsilon",
                    algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                    euler_at_final=False, use_karras_sigmas=False, final_sigmas_type="zero",
                    lambda_min_clipped=-float("inf"), timestep_spacing="linspace", steps_offset=0,
                    rescale_betas_zero_snr=False)


class DPMSolverMultistepScheduler(MultistepScheduler):
    diffusers_name = "DPMSolverMultistepScheduler"
    defaults = DPM_DEFAULTS
    unsupported = {"thresholding": (False,), "variance_type": (None,), "use_exponential_sigmas": (False,),
                   "use_beta_sigmas": (False,), "use_lu_lambdas": (False,), "use_flow_sigmas": (False,),
                   "use_dynamic_shifting": (False,)}
    # diffusers treats UniPC's/DEIS's names for the 2nd-order rule as "midpoint" and "deis" as "dpmsolver++"
    option_aliases = {"algorithm_type": {"deis": "dpmsolver++"},
                      "solver_type": {"bh1": "midpoint", "bh2": "midpoint", "logrho": "midpoint"}}

    def check_config(self, config) -> None:
        if config.algorithm_type != "dpmsolver++":
            raise ValueError(f"DPM-Solver algorithm_type {config.algorithm_type!r} is not supported "
                             "(supported: 'dpmsolver++'; the SDE and noise-prediction variants are not built)")
        if config.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"DPM-Solver solver_type must be 'midpoint' or 'heun', got {config.solver_type!r}")
        if config.solver_order not in (1, 2, 3):
            raise ValueError(f"DPM-Solver solver_order must be 1, 2 or 3, got {config.solver_order}")

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        c = self.config
        # lambda_min_clipped: stop before timesteps whose half log-SNR is below the bound
        lambdas = log32(sqrt32(self.alphas_cumprod)) - log32(sqrt32(np.float32(1.0) - self.alphas_cumprod))
        clipped = int(np.searchsorted(lambdas[::-1], c.lambda_min_clipped, side="left"))
        timesteps = schedule.multistep_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset,
                                                 last_timestep=c.num_train_timesteps - clipped)
        if c.use_karras_sigmas:
            # Karras over the whole training range, then back to (rounded) timesteps
            sigmas = schedule.karras_sigmas(self.sigma_table[0].item(), self.sigma_table[-1].item(), n)
            timesteps = schedule.sigma_to_t(sigmas, schedule.log_sigma_table(self.sigma_table))
            if c.beta_schedule != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = schedule.sigma_at(timesteps, self.sigma_table)
        final = np.float32(0.0)
        if c.final_sigmas_type == "sigma_min":
            final = sqrt32((np.float32(1.0) - self.alphas_cumprod[0]) / self.alphas_cumprod[0])
        self.sigmas = np.concatenate([sigmas, [final]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.int64)
        self.num_inference_steps = len(self.timesteps)
        self._reset_solver_state()

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """DPM-Solver++ multistep (Algorithm 2 for order 2): x0 from the model output joins the history,
        then the highest order the history allows updates x_s -> x_t (orders below)."""
        i = self._begin_step(model_output, sample, timestep)
        c = self.config
        n = len(self.timesteps)
        # fall back to lower orders at the very end: more stable for few steps (< 15) and needed
        # when the last sigma is 0 (lambda = inf)
        last_is_first_order = i == n - 1 and (c.euler_at_final or (c.lower_order_final and n < 15)
                                              or c.final_sigmas_type == "zero")
        second_last_is_second_order = i == n - 2 and c.lower_order_final and n < 15

        x0 = self._to_x0(model_output, sample, self.sigmas[i])
        self._remember(x0)
        if c.solver_order == 1 or self.lower_order_nums < 1 or last_is_first_order:
            prev_sample = self._first_order(sample, i)
        elif c.solver_order == 2 or self.lower_order_nums < 2 or second_last_is_second_order:
            prev_sample = self._second_order(sample, i)
        else:
            prev_sample = self._third_order(sample, i)
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        return self._end_step(prev_sample, x0)

    def _first_order(self, sample: paddle.Tensor, i: int) -> paddle.Tensor:
        """x_t = (sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) D0  (DPM-Solver++ first order = DDIM)."""
        alpha_t, sigma_t = alpha_sigma(self.sigmas[i + 1])
        _, sigma_s = alpha_sigma(self.sigmas[i])
        h = half_log_snr(self.sigmas[i + 1]) - half_log_snr(self.sigmas[i])
        d0 = self.model_outputs[-1]
        return coef(sigma_t / sigma_s) * sample - coef(alpha_t * (exp32(-h) - np.float32(1.0))) * d0

    def _second_order(self, sample: paddle.Tensor, i: int) -> paddle.Tensor:
        """DPM-Solver++(2M), Algorithm 2: D1 = (m0 - m1)/r0 with r0 = h_prev/h; midpoint uses
        -0.5 alpha_t (e^{-h} - 1) D1, heun uses alpha_t ((e^{-h} - 1)/h + 1) D1."""
        alpha_t, sigma_t = alpha_sigma(self.sigmas[i + 1])
        _, sigma_s0 = alpha_sigma(self.sigmas[i])
        lam_t, lam_s0, lam_s1 = (half_log_snr(self.sigmas[j]) for j in (i + 1, i, i - 1))
        h, h_0 = lam_t - lam_s0, lam_s0 - lam_s1
        r0 = h_0 / h
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        d1 = coef(np.float32(1.0) / r0) * (m0 - m1)
        phi = alpha_t * (exp32(-h) - np.float32(1.0))
        x_t = coef(sigma_t / sigma_s0) * sample - coef(phi) * m0
        if self.config.solver_type == "midpoint":
            return x_t - coef(np.float32(0.5) * phi) * d1
        return x_t + coef(alpha_t * ((exp32(-h) - np.float32(1.0)) / h + np.float32(1.0))) * d1

    def _third_order(self, sample: paddle.Tensor, i: int) -> paddle.Tensor:
        """Multistep third order (DPM-Solver-3M in data-prediction form): second differences D2."""
        one = np.float32(1.0)
        alpha_t, sigma_t = alpha_sigma(self.sigmas[i + 1])
        _, sigma_s0 = alpha_sigma(self.sigmas[i])
        lam_t, lam_s0, lam_s1, lam_s2 = (half_log_snr(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2))
        h, h_0, h_1 = lam_t - lam_s0, lam_s0 - lam_s1, lam_s1 - lam_s2
        r0, r1 = h_0 / h, h_1 / h
        m0, m1, m2 = self.model_outputs[-1], self.model_outputs[-2], self.model_outputs[-3]
        d1_0 = coef(one / r0) * (m0 - m1)
        d1_1 = coef(one / r1) * (m1 - m2)
        d1 = d1_0 + coef(r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = coef(one / (r0 + r1)) * (d1_0 - d1_1)
        e = exp32(-h) - one
        return (coef(sigma_t / sigma_s0) * sample - coef(alpha_t * e) * m0
                + coef(alpha_t * (e / h + one)) * d1
                - coef(alpha_t * ((exp32(-h) - one + h) / (h * h) - np.float32(0.5))) * d2)
