"""Shared pieces of the samplers that work on alpha_bar (DDIM, DDPM, PNDM, LCM)."""
from __future__ import annotations

import numpy as np
import paddle

from .base import Scheduler, coef
from .schedule import spaced_timesteps, sqrt32


def predict_x0_and_eps(model_output: paddle.Tensor, sample: paddle.Tensor, alpha_bar: np.float32,
                       prediction_type: str) -> tuple[paddle.Tensor, paddle.Tensor]:
    """x_0 and epsilon from the model output, using x_t = sqrt(a) x_0 + sqrt(1 - a) eps (DDIM eq. 4).

    v-prediction is Salimans & Ho 2022, "Progressive Distillation", sec. 4: v = sqrt(a) eps - sqrt(1-a) x_0.
    """
    sqrt_a = coef(sqrt32(alpha_bar))
    sqrt_b = coef(sqrt32(np.float32(1.0) - alpha_bar))
    if prediction_type == "epsilon":
        return (sample - sqrt_b * model_output) / sqrt_a, model_output
    if prediction_type == "sample":
        return model_output, (sample - sqrt_a * model_output) / sqrt_b
    if prediction_type == "v_prediction":
        return sqrt_a * sample - sqrt_b * model_output, sqrt_a * model_output + sqrt_b * sample
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def alpha_space_timesteps(spacing: str, num_train_timesteps: int, num_steps: int,
                          steps_offset: int) -> np.ndarray:
    """DDIM/DDPM int64 timesteps; see :func:`schedule.spaced_timesteps`."""
    return spaced_timesteps(spacing, num_train_timesteps, num_steps, steps_offset).astype(np.int64)


class EvenlySpacedScheduler(Scheduler):
    """DDIM and DDPM: ``n`` training timesteps picked by the configured spacing, one model call each."""

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = self._check_num_steps(num_inference_steps)
        c = self.config
        self.num_inference_steps = n
        self.timesteps = alpha_space_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset)
        self._reset_step_tracking()
