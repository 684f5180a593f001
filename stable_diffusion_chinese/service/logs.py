"""The service's log: ``stable_diffusion_chinese`` loggers, shown on stderr at INFO unless the user configured logging.

PaddleHub (``hub run``, ``hub serving``) configures only its own logger, so without this our one-line notes
(which model is used, a conversion starting) would be dropped by Python's default WARNING threshold.
"""
from __future__ import annotations

import logging
import sys

ROOT = "stable_diffusion_chinese"


def setup_logging() -> None:
    """Give our loggers a stderr handler at INFO, once, unless the application set up logging itself."""
    logger = logging.getLogger(ROOT)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[stable_diffusion_chinese] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
