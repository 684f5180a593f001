"""UniPC: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models" (arXiv:2302.04867), multistep UniP predictor + UniC corrector, B(h) variants.

Each step first corrects the previous step's prediction with the new model output (UniC, no extra
model call), then predicts the next sample (UniP). With h = lambda_t - lambda_s, hh = -h in the
data-prediction form, and the ratios r_k = (lambda_{s_k} - lambda_s)/h of earlier steps, the
coefficients rho solve R rho = b with R_ik = r_k^(i-1) and b_i = phi_{i+1}(hh) i! / B(h)
(sec. 3.2); B(h) = hh for bh1, e^hh - 1 for bh2.
"""
from __future__ import annotations

import numpy as np
import paddle

from . import schedule
from .base import SchedulerOutput, coef
from .multistep import MultistepScheduler, alpha_sigma, half_log_snr
from .schedule import expm1_32

# diffusers 0.42.1 UniPCMultistepScheduler.__init__ defaults (for the options we implement)
UNIPC_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                      trained_betas=None, solver_order=2, prediction_type="epsilon", predict_x0=True,
                      solver_type="bh2", lower_order_final=True, disable_corrector=(), use_karras_sigmas=False,
                      timestep_spacing="linspace", steps_offset=0, final_sigmas_type="zero",
                      rescale_betas_zero_snr=False, sigma_min=None, sigma_max=None)


class UniPCMultistepScheduler(MultistepScheduler):
    diffusers_name = "UniPCMultistepScheduler"
    defaults = UNIPC_DEFAULTS
    unsupported = {"thresholding": (False,), "solver_p": (None,), "use_exponential_sigmas": (False,),
                   "use_beta_sigmas": (False,), "use_flow_sigmas": (False,), "use_dynamic_shifting": (False,),
                   "shift_terminal": (None,)}
    # diffusers maps DPM-Solver's names for the second-order rule onto bh2
    option_aliases = {"solver_type": {"midpoint": "bh2", "heun": "bh2", "logrho": "bh2"}}

    def check_config(self, config) -> None:
        if config.solver_type not in ("bh1", "bh2"):
            raise ValueError(f"UniPC solver_type must be 'bh1' or 'bh2', got {config.solver_type!r}")
        if not isinstance(config.solver_order, int) or config.solver_order < 1:
            raise ValueError(f"UniPC solver_order must be a positive int, got {config.solver_order!r}")

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = schedule.multistep_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset)
        if c.use_karras_sigmas:
            sigma_min = c.sigma_min if c.sigma_min is not None else self.sigma_table[0].item()
            sigma_max = c.sigma_max if c.sigma_max is not None else self.sigma_table[-1].item()
            sigmas = schedule.karras_sigmas(sigma_min, sigma_max, n)
            timesteps = schedule.sigma_to_t(sigmas, schedule.log_sigma_table(self.sigma_table)).round()
            final = sigmas[-1] if c.final_sigmas_type == "sigma_min" else 0.0
        else:
            sigmas = schedule.sigma_at(timesteps, self.sigma_table)
            final = 0.0
            if c.final_sigmas_type == "sigma_min":
                final = schedule.sqrt32((np.float32(1.0) - self.alphas_cumprod[0]) / self.alphas_cumprod[0])
        self.sigmas = np.concatenate([sigmas, [final]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.int64)
        self.num_inference_steps = len(self.timesteps)
        self._reset_solver_state()
        self.last_sample: paddle.Tensor | None = None
        self.this_order = 1

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """UniC corrects the sample the model just saw using its output (no extra model call), then
        UniP predicts the next sample; both solve R rho = b of sec. 3.2 (see the module docstring)."""
        i = self._begin_step(model_output, sample, timestep)
        c = self.config
        sigma = self.sigmas[i]
        converted = self._to_x0(model_output, sample, sigma) if c.predict_x0 else \
            self._to_eps(model_output, sample, sigma)
        if i > 0 and (i - 1) not in c.disable_corrector and self.last_sample is not None:
            sample = self._correct(converted, self.last_sample, sample, i, self.this_order)
        self._remember(converted)
        order = min(c.solver_order, len(self.timesteps) - i) if c.lower_order_final else c.solver_order
        self.this_order = min(order, self.lower_order_nums + 1)
        self.last_sample = sample
        prev_sample = self._predict(sample, i, self.this_order)
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        return self._end_step(prev_sample, converted if c.predict_x0 else None)

    # ------------------------------------------------------------ UniP / UniC
    def _bh_terms(self, sigma_t: np.float32, sigma_s0: np.float32, earlier: list[int], outputs: list,
                  order: int, m0: paddle.Tensor):
        """Shared part of UniP and UniC: h, phi_1, B(h), the ratios r_k, D1_k = (m_k - m0)/r_k and
        the R rho = b system, all float32 as diffusers."""
        one = np.float32(1.0)
        lam_s0 = half_log_snr(sigma_s0)
        h = half_log_snr(sigma_t) - lam_s0
        rks, d1s = [], []
        for k in range(1, order):
            rk = (half_log_snr(self.sigmas[earlier[k - 1]]) - lam_s0) / h
            rks.append(rk)
            d1s.append((outputs[-(k + 1)] - m0) / coef(rk))
        rks.append(one)
        rks = np.array(rks, dtype=np.float32)
        hh = -h if self.config.predict_x0 else h
        h_phi_1 = expm1_32(hh)
        b_h = hh if self.config.solver_type == "bh1" else expm1_32(hh)
        R, b, factorial = [], [], 1
        # h = 0 when Karras + final_sigmas_type="sigma_min" repeats the last sigma: the phi_k terms
        # are then 0/0, but that last step is first order and never reads them (diffusers alike)
        with np.errstate(invalid="ignore", divide="ignore"):
            h_phi_k = h_phi_1 / hh - one
            for k in range(1, order + 1):
                R.append(rks ** (k - 1))
                b.append(h_phi_k * np.float32(factorial) / b_h)
                factorial *= k + 1
                h_phi_k = h_phi_k / hh - np.float32(1 / factorial)
        return h_phi_1, b_h, np.stack(R), np.array(b, dtype=np.float32), d1s

    def _base_update(self, x: paddle.Tensor, m0: paddle.Tensor, sigma_t: np.float32, sigma_s0: np.float32,
                     h_phi_1: np.float32, b_h: np.float32):
        """Exponential-integrator first-order part; returns it and the factor of the correction sum."""
        alpha_t, sig_t = alpha_sigma(sigma_t)
        alpha_s0, sig_s0 = alpha_sigma(sigma_s0)
        if self.config.predict_x0:
            return coef(sig_t / sig_s0) * x - coef(alpha_t * h_phi_1) * m0, alpha_t * b_h
        return coef(alpha_t / alpha_s0) * x - coef(sig_t * h_phi_1) * m0, sig_t * b_h

    def _predict(self, x: paddle.Tensor, i: int, order: int) -> paddle.Tensor:
        """UniP-p: x_t = base - B(h) * scale * sum_k rho_k D1_k, rho from the first order-1 equations."""
        sigma_t, sigma_s0 = self.sigmas[i + 1], self.sigmas[i]
        m0 = self.model_outputs[-1]
        h_phi_1, b_h, R, b, d1s = self._bh_terms(sigma_t, sigma_s0, [i - k for k in range(1, order)],
                                                 self.model_outputs, order, m0)
        x_t, scale = self._base_update(x, m0, sigma_t, sigma_s0, h_phi_1, b_h)
        if not d1s:
            return x_t
        rhos = np.array([0.5], dtype=np.float32) if order == 2 else _solve(R[:-1, :-1], b[:-1])
        return x_t - coef(scale) * _weighted_sum(rhos, d1s)

    def _correct(self, model_t: paddle.Tensor, last_sample: paddle.Tensor, this_sample: paddle.Tensor,
                 i: int, order: int) -> paddle.Tensor:
        """UniC-p: redo the step s0 -> t that produced ``this_sample`` using the new output at t too."""
        sigma_t, sigma_s0 = self.sigmas[i], self.sigmas[i - 1]
        m0 = self.model_outputs[-1]
        h_phi_1, b_h, R, b, d1s = self._bh_terms(sigma_t, sigma_s0, [i - (k + 1) for k in range(1, order)],
                                                 self.model_outputs, order, m0)
        x_t, scale = self._base_update(last_sample, m0, sigma_t, sigma_s0, h_phi_1, b_h)
        rhos = np.array([0.5], dtype=np.float32) if order == 1 else _solve(R, b)
        correction = coef(rhos[-1]) * (model_t - m0)
        if d1s:
            correction = _weighted_sum(rhos[:-1], d1s) + correction
        return x_t - coef(scale) * correction


def _solve(R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The small R rho = b system (diffusers: float32 LAPACK; we: float64, rounded)."""
    return schedule.math32.solve(R, b)


def _weighted_sum(weights: np.ndarray, tensors: list[paddle.Tensor]) -> paddle.Tensor:
    total = coef(weights[0]) * tensors[0]
    for w, t in zip(weights[1:], tensors[1:]):
        total = total + coef(w) * t
    return total
