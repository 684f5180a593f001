"""The training loop: AdamW, warm-up, gradient clipping, EMA, checkpoints with exact resume, logs.

    trainer = Trainer(task, config, run_dir)
    trainer.run()          # resumes from the newest checkpoint in run_dir, if there is one

``run_dir`` receives ``ckpt-<step>.pdckpt`` files, ``train_config.json`` and ``loss_log.jsonl``
(one JSON object per ``log_every`` steps: step, mean loss, learning rate, seconds per step).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import paddle
from tqdm.auto import tqdm

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .ema import EMA

LOG_FILE = "loss_log.jsonl"
CONFIG_FILE = "train_config.json"


class Trainer:
    def __init__(self, task, config: TrainConfig, run_dir: str | Path):
        self.task, self.config, self.run_dir = task, config, Path(run_dir)
        self.layers = task.trainable
        params = [p for layer in self.layers.values() for p in layer.parameters() if not p.stop_gradient]
        if not params:
            raise ValueError("the task has no trainable parameters")
        # decay weight matrices and kernels only; biases, norm scales and embeddings' rows of 1-D are left alone
        decayed = {p.name for p in params if p.ndim >= 2}
        clip = paddle.nn.ClipGradByGlobalNorm(config.grad_clip) if config.grad_clip > 0 else None
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=config.learning_rate, parameters=params, beta1=config.adam_beta1,
            beta2=config.adam_beta2, weight_decay=config.weight_decay, grad_clip=clip,
            apply_decay_param_fun=lambda name: name in decayed)
        self.ema = EMA(self.layers, config.ema_decay)
        self.step = 0

    def resume(self) -> int:
        """Load the newest checkpoint in ``run_dir`` (if any); returns the step it reached."""
        path = latest_checkpoint(self.run_dir)
        if path is not None:
            self.step = load_checkpoint(path, self.layers, self.optimizer, self.ema)["step"]
        self._forget_logged_steps_after(self.step)
        return self.step

    def _forget_logged_steps_after(self, step: int) -> None:
        """Drop the log entries of steps after ``step``: a run stopped between a log line and its next
        checkpoint takes those steps again, and would log them twice. A line cut short by the stop goes too."""
        log = self.run_dir / LOG_FILE
        if not log.is_file():
            return
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if (logged := _logged_step(line)) is not None and logged <= step]
        if len(kept) != len(lines):
            log.write_text("".join(kept), encoding="utf-8")

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.layers, self.optimizer, self.ema,
                               keep=self.config.keep_checkpoints)

    def run(self, until: int | None = None, progress: bool = True) -> int:
        """Train from the current step up to ``until`` (default ``config.steps``); checkpoints on the way."""
        config = self.config
        until = config.steps if until is None else int(until)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config.save(self.run_dir / CONFIG_FILE)
        for layer in self.layers.values():
            layer.train()
        losses, started = [], time.time()
        bar = tqdm(total=until, initial=self.step, disable=not progress, desc="training", mininterval=5.0)
        while self.step < until:
            self.optimizer.set_lr(config.learning_rate_at(self.step))
            loss = self.task.loss(self.step)
            value = float(loss)
            if not np.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {self.step}; lower the learning rate")
            loss.backward()
            self.optimizer.step()
            self.optimizer.clear_grad()
            self.ema.update(self.layers)
            self.step += 1
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if self.step % config.log_every == 0 or self.step == until:
                self._log(losses, (time.time() - started) / len(losses))
                losses, started = [], time.time()
            if self.step % config.checkpoint_every == 0 or self.step == until:
                self.save()
        bar.close()
        return self.step

    def _log(self, losses: list[float], seconds_per_step: float) -> None:
        entry = {"step": self.step, "loss": float(np.mean(losses)), "lr": self.config.learning_rate_at(self.step - 1),
                 "sec_per_step": round(seconds_per_step, 3)}
        entry.update({k: round(v, 6) for k, v in getattr(self.task, "last_parts", {}).items()})
        with open(self.run_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def _logged_step(line: str) -> int | None:
    """The step of one log line, None when the line is not a whole entry."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):   # JSONDecodeError is a ValueError
        return None
