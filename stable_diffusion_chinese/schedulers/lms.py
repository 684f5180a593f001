"""LMS: linear multistep (Adams-Bashforth) integration of the probability-flow ODE in sigma space,
the k-diffusion sampler ``sample_lms`` (Crowson), on the EDM parameterisation of Karras et al. 2022.
"""
from __future__ import annotations

import numpy as np
import paddle
from numpy.polynomial import Polynomial

from .base import SchedulerOutput, coef
from .sigma_space import SigmaScheduler, predict_x0_sigma

# diffusers 0.42.1 LMSDiscreteScheduler.__init__ defaults
LMS_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, use_karras_sigmas=False, prediction_type="epsilon",
                    timestep_spacing="linspace", steps_offset=0)

LMS_ORDER = 4  # diffusers' default ``order`` argument of LMSDiscreteScheduler.step


def lms_coefficient(sigmas: np.ndarray, i: int, order: int, j: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial of node sigma_{i-j},
    built on the nodes sigma_i, ..., sigma_{i-order+1}.

    The integrand is a polynomial of degree order-1 <= 3, so we integrate it exactly with
    ``numpy.polynomial`` (float64) instead of diffusers' adaptive ``scipy.integrate.quad``: same value
    up to rounding, deterministic, no quadrature tolerance to reason about, no scipy at run time.
    """
    nodes = [np.float64(sigmas[i - k]) for k in range(order)]
    others = [nodes[k] for k in range(order) if k != j]
    basis = Polynomial.fromroots(others) / np.prod([nodes[j] - s for s in others]) if others else Polynomial([1.0])
    antiderivative = basis.integ()
    return float(antiderivative(np.float64(sigmas[i + 1])) - antiderivative(np.float64(sigmas[i])))


class LMSDiscreteScheduler(SigmaScheduler):
    diffusers_name = "LMSDiscreteScheduler"
    defaults = LMS_DEFAULTS
    unsupported = {"use_exponential_sigmas": (False,), "use_beta_sigmas": (False,)}

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        self.num_inference_steps = n
        timesteps, sigmas = self._discrete_sigmas(n)
        self.timesteps = timesteps
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.derivatives: list[paddle.Tensor] = []
        self._reset_step_tracking()

    def step(self, model_output: paddle.Tensor, timestep, sample: paddle.Tensor,
             noise: paddle.Tensor | None = None, eta: float = 0.0) -> SchedulerOutput:
        """x_{i+1} = x_i + sum_j c_ij d_{i-j}, d = (x - x0)/sigma the ODE derivative dx/dsigma
        (EDM eq. 4 with sigma(t) = t), c_ij the integrated Lagrange weights (Adams-Bashforth)."""
        i = self._begin_step(model_output, sample, timestep)
        sigma = self.sigmas[i]
        x0 = predict_x0_sigma(model_output, sample, sigma, self.config.prediction_type)
        self.derivatives.append((sample - x0) / coef(sigma))
        if len(self.derivatives) > LMS_ORDER:
            self.derivatives.pop(0)
        order = min(i + 1, LMS_ORDER)
        update = None
        for j, derivative in enumerate(reversed(self.derivatives)):
            term = coef(lms_coefficient(self.sigmas, i, order, j)) * derivative
            update = term if update is None else update + term
        return self._end_step(sample + update, x0)
