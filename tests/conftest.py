"""Shared fixtures: the tiny reference configs and seeded numpy inputs."""
import json
from pathlib import Path

import numpy as np
import pytest

CONFIGS = Path(__file__).parent / "reference_configs"


def reference_config(name: str) -> dict:
    """A diffusers/transformers config from tests/reference_configs (copied from shared/reference)."""
    with open(CONFIGS / name, encoding="utf-8") as f:
        config = json.load(f)
    # diffusers' from_config resets the keys listed here to their defaults, which would undo a test's overrides
    config.pop("_use_default_values", None)
    return config


@pytest.fixture
def rng():
    return np.random.default_rng(0)
