"""The DDPM forward process used for training: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps.

Betas come from ``schedulers/schedule.py`` (the same maths every sampler uses), so a model trained
here with ``scaled_linear`` 0.00085..0.012 over 1000 steps works with the standard SD samplers.
"""
from __future__ import annotations

import numpy as np
import paddle

from ..schedulers.schedule import alphas_cumprod_from_betas, make_betas

#: Stable Diffusion 1.x's training schedule (its scheduler_config.json)
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def training_noise(rng: np.random.Generator, shape, offset: float = 0.0) -> np.ndarray:
    """The noise a training step adds: standard normal, plus ``offset`` times one more normal value per
    sample and channel, shared by all pixels ("offset noise", N. Guttenberg 2023, "Diffusion with Offset
    Noise"; diffusers' ``train_text_to_image --noise_offset``, which suggests 0.1).

    Why: SD's schedule ends at alpha_T = 0.0047, not 0, so the channel means of x_T still carry the
    image's mean colour, and a model learns to read its background from them. At sampling time x_T is
    pure noise, so its random channel means pick the background (docs/embedded_model.md measures it).
    With the extra per-channel shift in training those means stop being evidence and the prompt decides.
    ``offset`` 0 draws nothing extra, so the stream of random numbers is the one of runs without it."""
    noise = rng.standard_normal(shape).astype(np.float32)
    if offset > 0:
        noise += np.float32(offset) * rng.standard_normal((*shape[:2], 1, 1)).astype(np.float32)
    return noise


class NoiseSchedule:
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.prediction_type = prediction_type
        betas = make_betas(beta_schedule, self.num_train_timesteps, beta_start, beta_end)
        self.alphas_cumprod = alphas_cumprod_from_betas(betas)

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "NoiseSchedule":
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
        values = {**SD_SCHEDULE, **{k: config[k] for k in keys if k in config}}
        return cls(**values)

    def add_noise(self, x0: paddle.Tensor, noise: paddle.Tensor, timesteps: np.ndarray) -> paddle.Tensor:
        a = self.alphas_cumprod[np.asarray(timesteps, dtype=np.int64)].reshape(-1, 1, 1, 1)
        return paddle.to_tensor(np.sqrt(a)) * x0 + paddle.to_tensor(np.sqrt(1.0 - a)) * noise

    def snr(self, timesteps: np.ndarray) -> np.ndarray:
        """Signal-to-noise ratio a_t / (1 - a_t) of each timestep."""
        a = self.alphas_cumprod[np.asarray(timesteps, dtype=np.int64)]
        return a / (1.0 - a)

    def min_snr_weights(self, timesteps: np.ndarray, gamma: float) -> np.ndarray:
        """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via
        Min-SNR Weighting Strategy", eq. 5 and its epsilon / v forms in section 3.4): the x0-space weight
        min(SNR, gamma) expressed for the target this schedule trains, i.e. min(SNR, gamma) / SNR for
        epsilon and min(SNR, gamma) / (SNR + 1) for v (as diffusers' train_text_to_image --snr_gamma).
        Nearly noise-free timesteps, which are easy, stop dominating the gradient."""
        snr = self.snr(timesteps)
        clipped = np.minimum(snr, gamma)
        return clipped / (snr if self.prediction_type == "epsilon" else snr + 1.0)

    def target(self, x0: paddle.Tensor, noise: paddle.Tensor, timesteps: np.ndarray) -> paddle.Tensor:
        """What the UNet learns to predict: the noise, or v = sqrt(a) eps - sqrt(1 - a) x0."""
        if self.prediction_type == "epsilon":
            return noise
        a = self.alphas_cumprod[np.asarray(timesteps, dtype=np.int64)].reshape(-1, 1, 1, 1)
        return paddle.to_tensor(np.sqrt(a)) * noise - paddle.to_tensor(np.sqrt(1.0 - a)) * x0
