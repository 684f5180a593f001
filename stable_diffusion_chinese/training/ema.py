"""Exponential moving average of parameters (the weights that get shipped)."""
from __future__ import annotations

import paddle
from paddle import nn


class EMA:
    """shadow <- d * shadow + (1 - d) * param, with d = min(decay, (1 + n) / (10 + n)) warming up."""

    def __init__(self, layers: dict[str, nn.Layer], decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {f"{name}.{key}": p.detach().clone()
                       for name, layer in layers.items() for key, p in layer.state_dict().items()}

    @paddle.no_grad()
    def update(self, layers: dict[str, nn.Layer]) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, layer in layers.items():
            for key, p in layer.state_dict().items():
                s = self.shadow[f"{name}.{key}"]
                s.set_value(s * d + p * (1.0 - d))

    def copy_to(self, layers: dict[str, nn.Layer]) -> None:
        """Load the averaged weights into ``layers`` (e.g. fresh copies used for export)."""
        for name, layer in layers.items():
            layer.set_state_dict({key: self.shadow[f"{name}.{key}"] for key in layer.state_dict()})

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def set_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model: {sorted(missing)[:5]}...")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for key, value in state["shadow"].items():
            self.shadow[key].set_value(value)
