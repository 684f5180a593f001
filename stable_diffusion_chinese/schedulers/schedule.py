"""Noise-schedule maths every sampler shares: betas, alphas_cumprod, sigmas, timestep spacing.

Everything here is numpy. The precision follows diffusers 0.42.1 step by step, because the aim is
samples equal to diffusers' within float32 rounding: diffusers keeps betas, alphas_cumprod and the
sigma table in float32 torch tensors, but interpolates sigmas and builds Karras schedules in float64
numpy. Functions say which precision they use.

Notation (Ho et al. 2020, "DDPM"; Karras et al. 2022, "EDM"):
    alpha_bar_t = prod_{s<=t} (1 - beta_s)          ``alphas_cumprod``
    sigma_t     = sqrt((1 - alpha_bar_t) / alpha_bar_t)   noise level of x_t / sqrt(alpha_bar_t)
"""
from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------- float32 elementary functions
# diffusers does its coefficient arithmetic on float32 torch tensors; we do the same arithmetic on
# np.float32 values. sqrt/log/exp/expm1 are evaluated in float64 and rounded once (correctly rounded
# float32). torch's CPU float32 versions are not always correctly rounded (sqrt is 1 ulp off for
# ~18% of inputs); with LMS's exactly integrated coefficients that is the only difference from
# diffusers left: tests swap ``math32`` for torch-backed functions and get bit-identical samples.


class Float32Math:
    """Correctly rounded float32 sqrt/log/exp/expm1 of float32 scalars or arrays, and the small
    linear solve UniPC needs (float64, rounded to float32)."""

    @staticmethod
    def _apply(fn, x):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return fn(np.asarray(x, dtype=np.float64)).astype(np.float32)[()]

    def sqrt(self, x):
        return self._apply(np.sqrt, x)

    def log(self, x):
        """log(0) = -inf as in torch: a zero final sigma gives lambda = +inf."""
        return self._apply(np.log, x)

    def exp(self, x):
        return self._apply(np.exp, x)

    def expm1(self, x):
        return self._apply(np.expm1, x)

    def solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.solve(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)


math32 = Float32Math()


def sqrt32(x):
    return math32.sqrt(x)


def log32(x):
    return math32.log(x)


def exp32(x):
    return math32.exp(x)


def expm1_32(x):
    return math32.expm1(x)


# ---------------------------------------------------------------- betas and alphas_cumprod


def linspace_f32(start: float, end: float, num: int) -> np.ndarray:
    """``torch.linspace(start, end, num, dtype=float32)`` reproduced bit for bit on CPU.

    torch casts the ends to float32, takes a float32 step, and evaluates the first half as
    ``start + i*step`` and the second half as ``end - (num-1-i)*step``, each rounded once (fused
    multiply-add). ``np.linspace(...).astype(float32)`` differs in the last bit for ~30% of the betas.
    """
    if num == 1:
        return np.array([start], dtype=np.float32)
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(num - 1))
    i = np.arange(num, dtype=np.float64)
    head = np.float64(start32) + step * i
    tail = np.float64(end32) - step * (num - 1 - i)
    return np.where(i < num // 2, head, tail).astype(np.float32)


def _alpha_bar_cosine(t: float) -> float:
    # Nichol & Dhariwal 2021, "Improved DDPM", eq. 17 with s = 0.008
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """``squaredcos_cap_v2``: beta_t = min(1 - alpha_bar(t+1)/alpha_bar(t), 0.999) (Improved DDPM)."""
    n = num_train_timesteps
    betas = [min(1 - _alpha_bar_cosine((i + 1) / n) / _alpha_bar_cosine(i / n), max_beta) for i in range(n)]
    return np.asarray(betas, dtype=np.float64).astype(np.float32)


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float,
               trained_betas=None) -> np.ndarray:
    """float32 betas, as diffusers' schedulers build them in ``__init__``."""
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float32)
        if betas.ndim != 1 or len(betas) != num_train_timesteps:
            raise ValueError(f"trained_betas must be a list of num_train_timesteps={num_train_timesteps} "
                             f"numbers, got shape {betas.shape}")
        return betas
    if beta_schedule == "linear":
        return linspace_f32(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "scaled_linear":
        # "scaled_linear" is linear in sqrt(beta), the latent-diffusion schedule
        root = linspace_f32(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps)
        return root * root
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(num_train_timesteps)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r} "
                     "(supported: 'linear', 'scaled_linear', 'squaredcos_cap_v2')")


def cumprod_f32(values: np.ndarray) -> np.ndarray:
    """torch's CPU cumprod of float32: accumulates in float64, stores each prefix as float32."""
    return np.cumprod(values.astype(np.float64)).astype(np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.

    Shifts and scales sqrt(alpha_bar) so the last timestep has zero signal; float32 like diffusers.
    """
    root = sqrt32(cumprod_f32(np.float32(1.0) - betas))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alpha_bar = root * root
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return np.float32(1.0) - alphas


def alphas_cumprod_from_betas(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), float32."""
    return cumprod_f32(np.float32(1.0) - betas)


def sigmas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """The float32 sigma table sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), indexed by t."""
    return sqrt32((np.float32(1.0) - alphas_cumprod) / alphas_cumprod)


# ---------------------------------------------------------------- timestep spacing

SPACINGS = ("leading", "trailing", "linspace")


def spaced_timesteps(spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0,
                     round_linspace: bool = True) -> np.ndarray:
    """Descending float64 timesteps for ``num_steps`` sampling steps.

    The three spacings of Lin et al. 2023, Table 2. ``leading`` adds ``steps_offset`` (SD uses 1);
    ``round_linspace=False`` is the Euler-family variant that keeps fractional linspace timesteps.
    """
    T = num_train_timesteps
    if spacing == "linspace":
        steps = np.linspace(0, T - 1, num_steps)
        return (steps.round() if round_linspace else steps)[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, num_steps) * (T // num_steps)).round()[::-1] + steps_offset
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / num_steps)) - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r} (supported: {list(SPACINGS)})")


def multistep_timesteps(spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0,
                        last_timestep: int | None = None) -> np.ndarray:
    """Descending int64 timesteps of the multistep solvers (DPM-Solver, UniPC).

    They space ``num_steps + 1`` points and drop the final one, so the last step lands on sigma = 0;
    ``last_timestep`` < T when DPM-Solver clips lambda (``lambda_min_clipped``).
    """
    T = num_train_timesteps
    last = T if last_timestep is None else last_timestep
    if spacing == "linspace":
        steps = np.linspace(0, last - 1, num_steps + 1).round()[::-1][:-1]
    elif spacing == "leading":
        steps = (np.arange(0, num_steps + 1) * (last // (num_steps + 1))).round()[::-1][:-1] + steps_offset
    elif spacing == "trailing":
        steps = np.arange(last, 0, -T / num_steps).round() - 1
    else:
        raise ValueError(f"unknown timestep_spacing {spacing!r} (supported: {list(SPACINGS)})")
    return steps.astype(np.int64)


# ---------------------------------------------------------------- sigma <-> timestep


def sigma_at(timesteps: np.ndarray, sigma_table: np.ndarray) -> np.ndarray:
    """Sigma at (possibly fractional) timesteps: linear interpolation of the table, float64."""
    return np.interp(timesteps, np.arange(0, len(sigma_table)), sigma_table)


def log_sigma_table(sigma_table: np.ndarray) -> np.ndarray:
    """log of the float32 sigma table with numpy's float32 log, as diffusers takes it (not torch's)."""
    return np.log(sigma_table)


def sigma_to_t(sigmas: np.ndarray, log_table: np.ndarray) -> np.ndarray:
    """Fractional timesteps of ``sigmas``: invert ``log sigma_t`` by piecewise-linear interpolation.

    ``log_table`` is ascending in t. For each sigma find the table interval holding
    log(sigma) and interpolate its index; sigmas outside the table clamp to its ends.
    """
    sigmas = np.asarray(sigmas, dtype=np.float64)
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    at_or_above = (log_sigma[None, :] - log_table[:, None]) >= 0
    low = np.cumsum(at_or_above, axis=0).argmax(axis=0).clip(max=len(log_table) - 2)
    high = low + 1
    w = np.clip((log_table[low] - log_sigma) / (log_table[low] - log_table[high]), 0, 1)
    return ((1 - w) * low + w * high).reshape(sigmas.shape)


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022 (EDM), eq. 5: sigma_i = (max^(1/rho) + i/(N-1) (min^(1/rho) - max^(1/rho)))^rho."""
    ramp = np.linspace(0, 1, num_steps)
    max_inv_rho = sigma_max ** (1 / rho)
    min_inv_rho = sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
