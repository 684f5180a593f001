"""Training: the embedded model's VAE and diffusion stages, and fine-tuning on a user folder.

See ``trainer.Trainer`` (the loop), ``tasks`` (what a step computes), ``data`` (batches),
``stages`` (the embedded model's recipe) and ``scripts/train_embedded.py`` (the command).
"""
from .config import TrainConfig
from .data import FolderData, SceneData
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "SceneData", "FolderData"]
