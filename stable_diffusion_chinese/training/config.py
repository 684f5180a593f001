"""Hyper-parameters of one training run (saved next to its checkpoints as ``train_config.json``)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from ..scenes.world import STYLES


@dataclasses.dataclass
class TrainConfig:
    steps: int = 1000                 # train until this many optimizer steps have been taken
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 200           # linear warm-up, then the schedule
    lr_schedule: str = "constant"     # or "cosine": down to min_lr_ratio * learning_rate at ``steps``
    min_lr_ratio: float = 0.1
    decay_steps: int = 0              # constant schedule: the last decay_steps before ``steps`` go linearly down to
                                      # min_lr_ratio * learning_rate (warmup-stable-decay, Hu et al. 2024, MiniCPM)
    weight_decay: float = 0.01        # AdamW, on weight matrices/kernels only (not biases, norms)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0            # global-norm clipping; 0 disables
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    # diffusion stage
    caption_dropout: float = 0.1      # captions replaced by "" so the model also learns the unconditional case (CFG)
    latent_reuse: int = 1             # each rendered + VAE-encoded batch serves this many steps (new noise, t, captions)
    train_text_encoder: bool = True
    snr_gamma: float = 0.0            # Min-SNR-gamma loss weighting (5 in the paper); 0 = plain MSE
    noise_offset: float = 0.0         # offset noise: per-sample-and-channel shift of the noise (noise.training_noise)
    twins: bool = False               # scene data: each scene comes with its twin, bound the other way (data.SceneData)
    reading_weight: float = 0.0       # + this x the scene-reading loss on the text encodings (training/scene_reader.py)
    binding_weight: float = 0.0       # + this x the cross-attention binding loss (training/attention_maps.py)
    binding_min_timestep: int = 0     # ... on the samples noised to at least this timestep
    leak_weight: float = 0.0          # + this x the cross-attention leak loss (attention_maps.leak_loss), same samples
    background_leak_weight: float = 0.0   # + this x leak_loss(background=True): object words in the empty cells
    leak_position_words: bool = False     # the leak loss counts the words naming an object's cell as its words
    object_weight: float = 1.0        # the denoising error in the objects' cells counts this many times (tasks.object_weights)
    count_share: float = 0.0          # > 0: count scenes' share of the scenes drawn (stages.diffusion_data); 0 = DIFFUSION_KINDS'
    style_share: float = 0.0          # > 0: favoured_style's share of the scenes drawn; 0 = sampling.STYLE_WEIGHTS'
    favoured_style: str = "watercolor"   # one of scenes.world.STYLES, the style style_share is of
    unet_config: str = ""             # with --init-from: grow its UNet into this config.json (models.grow_unet)
    # text-reading stage
    anchor_weight: float = 1.0        # + this x the encodings' squared distance to the encoder it started from
    # VAE stage
    kl_weight: float = 1e-5           # times the per-sample KL sum, divided by the pixels per sample (LDM uses 1e-6)
    edge_weight: float = 0.0          # + this x L1 of the reconstruction's neighbour differences (tasks.edge_loss)

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "latent_reuse", "keep_checkpoints"):
            if int(getattr(self, name)) < 1 and not (name == "steps" and self.steps == 0):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if self.decay_steps < 0:
            raise ValueError(f"decay_steps must be >= 0 (0: no final decay), got {self.decay_steps}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.decay_steps and self.lr_schedule != "constant":
            raise ValueError("decay_steps is the final decay of the 'constant' schedule; 'cosine' decays all along")
        if self.snr_gamma < 0:
            raise ValueError(f"snr_gamma must be >= 0 (0 disables Min-SNR weighting), got {self.snr_gamma}")
        for name in ("reading_weight", "anchor_weight", "binding_weight", "leak_weight", "background_leak_weight",
                     "edge_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {getattr(self, name)}")
        if self.binding_min_timestep < 0:
            raise ValueError(f"binding_min_timestep must be >= 0, got {self.binding_min_timestep}")
        if self.noise_offset < 0:
            raise ValueError(f"noise_offset must be >= 0 (0 disables offset noise), got {self.noise_offset}")
        if self.object_weight <= 0:
            raise ValueError(f"object_weight must be positive (1 weighs every position alike), got {self.object_weight}")
        for name in ("count_share", "style_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1) (0 keeps the stage's own share), got {getattr(self, name)}")
        if self.favoured_style not in STYLES[1:]:
            raise ValueError(f"favoured_style must be one of {', '.join(STYLES[1:])}, got {self.favoured_style!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def learning_rate_at(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        low = self.learning_rate * self.min_lr_ratio
        if self.lr_schedule == "constant":
            # a constant rate can be resumed with a larger ``steps``; the final decay anneals whatever run ends
            remaining = self.steps - step
            if self.decay_steps == 0 or remaining >= self.decay_steps:
                return self.learning_rate
            return low + (self.learning_rate - low) * max(0.0, remaining) / self.decay_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        return low + (self.learning_rate - low) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}")
        return cls(**values)
