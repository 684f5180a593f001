"""Errors raised while reading checkpoint files; each message names the file and the problem."""
from __future__ import annotations


class CheckpointError(ValueError):
    """Base class: a checkpoint file could not be turned into a numpy state dict."""


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    """A path or model folder holds no weights file we know how to read."""


class UnknownFormatError(CheckpointError):
    """A file's extension or contents match no checkpoint format we read."""


class CorruptCheckpointError(CheckpointError):
    """A file looks like a known format but its contents are broken or inconsistent."""


class UnsupportedCheckpointError(CheckpointError):
    """A valid checkpoint that uses a layout or feature this engine does not implement."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asks for a global that is not needed to rebuild tensors (it could run arbitrary code)."""
