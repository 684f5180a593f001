"""Run our dynamic-graph code even when PaddleHub switched Paddle to static mode.

PaddleHub wraps every method of a Module that is not an ``nn.Layer`` in ``paddle.enable_static()``
(paddlehub 2.4.0 ``RunModule.__getattribute__`` -> ``compat.paddle_utils.run_in_static_mode``), so the
Module's methods, ``hub run`` and ``hub serving`` all reach us in static mode.
"""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def dynamic_mode() -> Iterator[None]:
    """Dynamic mode inside the block; the caller's mode is restored after it."""
    import paddle  # here, so that importing the service stays cheap

    was_static = not paddle.in_dynamic_mode()
    if was_static:
        paddle.disable_static()
    try:
        yield
    finally:
        if was_static:
            paddle.enable_static()
