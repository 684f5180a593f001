"""The steps and guidance scale a model folder recommends, used when a call leaves them out.

``model_index.json`` may hold ``"_generation_defaults": {"num_inference_steps": 20, "guidance_scale": 3.0}``;
without it, Stable Diffusion's usual 20 steps and CFG 7.5 apply. Why a model may recommend its own:
7.5 suits full-size SD, while the small embedded model follows prompts far better at 3
(docs/embedded_model.md has the measurement). The key starts with "_" so diffusers' loader ignores it,
and the converter copies such keys unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

KEY = "_generation_defaults"


@dataclasses.dataclass(frozen=True)
class GenerationDefaults:
    num_inference_steps: int = 20
    guidance_scale: float = 7.5

    @classmethod
    def from_model_index(cls, index: dict, where: str) -> "GenerationDefaults":
        values = index.get(KEY, {})
        if not isinstance(values, dict):
            raise ValueError(f"{where}: '{KEY}' must be an object like {{\"guidance_scale\": 3.0}}, got {values!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} in '{KEY}'; accepted: {names}")
        steps = values.get("num_inference_steps", cls.num_inference_steps)
        guidance = values.get("guidance_scale", cls.guidance_scale)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{where}: '{KEY}' num_inference_steps must be a positive integer, got {steps!r}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
                or guidance < 0:
            raise ValueError(f"{where}: '{KEY}' guidance_scale must be a number >= 0, got {guidance!r}")
        return cls(steps, float(guidance))

    def resolve(self, steps: Any, guidance: Any) -> tuple[Any, Any]:
        """A call's ``num_inference_steps`` / ``guidance_scale``, with None meaning this model's default."""
        return (self.num_inference_steps if steps is None else steps,
                self.guidance_scale if guidance is None else guidance)

    def as_index_entry(self) -> dict[str, Any]:
        """What ``model_index.json`` records (nothing when these are the usual defaults)."""
        return {} if self == GenerationDefaults() else {KEY: dataclasses.asdict(self)}
