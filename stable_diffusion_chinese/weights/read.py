"""Read a weights file or a model folder into a flat numpy state dict.

Formats: ``.safetensors`` (the ``safetensors`` package's numpy API), torch pickles ``.bin/.pt/.pth/.ckpt``
(``torch_pickle``: numpy only, refuses code), Paddle ``.pdparams``, and sharded ``*.index.json`` sets.
Half-precision tensors come back as float32 so every caller sees one dtype.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import (CorruptCheckpointError, UnknownFormatError, UnsafeCheckpointError, UnsupportedCheckpointError,
                     WeightsNotFoundError)
from .torch_pickle import load_torch_file

# Looked for in this order inside a model folder (our Paddle output first, then diffusers/transformers names).
FOLDER_WEIGHT_FILES = (
    "model.pdparams",
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)
SHARD_INDEX_PATTERNS = ("*.safetensors.index.json", "*.bin.index.json")
TORCH_EXTENSIONS = (".bin", ".pt", ".pth", ".ckpt")
# paddle.save(layer.state_dict()) adds this bookkeeping entry next to the parameters
PADDLE_NAME_TABLE_KEY = "StructuredToParameterName@@"


@dataclasses.dataclass
class Checkpoint:
    """A flat state dict plus how to read it: ``torch_layout`` means Linear weights are ``[out, in]``."""

    tensors: dict[str, np.ndarray]
    torch_layout: bool
    source: str


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read ``path``: a weights file, or a model folder holding one (see ``FOLDER_WEIGHT_FILES``)."""
    path = Path(path)
    if path.is_dir():
        path = find_weights_file(path)
    elif not path.exists():
        raise WeightsNotFoundError(f"no such weights file or folder: {path}")
    tensors, torch_layout = _read_file(path)
    for key in list(tensors):  # one key at a time, so each half-precision original is freed as we go
        tensors[key] = _to_float32(tensors[key])
    return Checkpoint(tensors, torch_layout, str(path))


def find_weights_file(folder: Path) -> Path:
    for name in FOLDER_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    for pattern in SHARD_INDEX_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    looked_for = ", ".join(FOLDER_WEIGHT_FILES + SHARD_INDEX_PATTERNS)
    raise WeightsNotFoundError(f"no weights file in {folder} (looked for {looked_for})")


def _read_file(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    name = path.name
    if name.endswith(".index.json"):
        return _read_sharded(path), True
    if name.endswith(".safetensors"):
        return _read_safetensors(path), True
    if name.endswith(TORCH_EXTENSIONS):
        return _tensors_of(load_torch_file(path), path.name), True
    if name.endswith(".pdparams"):
        return _read_pdparams(path), False
    raise UnknownFormatError(
        f"unknown weights file extension: {path.name} (supported: .safetensors, {', '.join(TORCH_EXTENSIONS)}, "
        ".pdparams, *.safetensors.index.json, *.bin.index.json)")


def _tensors_of(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The arrays of an unpickled torch checkpoint; LDM ``.ckpt`` files nest them under ``state_dict``."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise UnknownFormatError(f"{source} holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise UnknownFormatError(f"{source} holds no tensors at its top level or under 'state_dict'")
    return tensors


# ---------------------------------------------------------------- safetensors

def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = _safetensors_header(path)
            tensors = {}
            for key in f.keys():
                if header[key]["dtype"].startswith("F8"):
                    raise UnsupportedCheckpointError(f"{path.name}: {key} has dtype {header[key]['dtype']} "
                                                     "(8-bit float), which is not supported")
                if header[key]["dtype"] == "BF16":  # numpy has no bfloat16: read the raw bits ourselves
                    tensors[key] = _read_bf16(path, header, key)
                else:
                    tensors[key] = f.get_tensor(key)
            return tensors
    except (SafetensorError, OSError, TypeError, KeyError, ValueError) as error:
        raise CorruptCheckpointError(f"{path.name}: broken safetensors file ({error})")


def _safetensors_header(path: Path) -> dict:
    # safetensors layout: u64 little-endian header length, JSON header, then the data buffer
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    header["__data_start__"] = 8 + length
    return header


def _read_bf16(path: Path, header: dict, key: str) -> np.ndarray:
    begin, end = header[key]["data_offsets"]
    shape = tuple(header[key]["shape"])
    with open(path, "rb") as fh:
        fh.seek(header["__data_start__"] + begin)
        bits = np.frombuffer(fh.read(end - begin), dtype="<u2")
    if bits.size != int(np.prod(shape, dtype=np.int64)):
        raise CorruptCheckpointError(f"{path.name}: {key} has {bits.size} values, shape {list(shape)}")
    return bf16_bits_to_float32(bits).reshape(shape)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the upper 16 bits of a float32, so widening is a shift."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------- sharded sets

def _read_sharded(index_path: Path) -> dict[str, np.ndarray]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"{index_path.name}: not a shard index with a weight_map ({error})")
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise WeightsNotFoundError(f"{index_path.name} names shard {shard}, which is not in {index_path.parent}")
        shard_tensors, _ = _read_file(shard_path)
        tensors.update(shard_tensors)
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise CorruptCheckpointError(f"{index_path.name}: {len(absent)} tensors listed in weight_map are in no "
                                     f"shard: {', '.join(absent[:10])}")
    return tensors


# ---------------------------------------------------------------- Paddle

# What ``paddle.save(layer.state_dict())`` pickles: numpy arrays and the name table. Nothing else is
# resolved, so a .pdparams file cannot run code when read (``paddle.load`` would unpickle anything).
PDPARAMS_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _PdparamsUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PDPARAMS_GLOBALS:
            return PDPARAMS_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(f"{self.source}: refusing to unpickle the global '{module}.{name}': a Paddle "
                                    "state dict holds only numpy arrays, and loading it could run arbitrary code")


def _read_pdparams(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f:
            state = _PdparamsUnpickler(f, path.name).load()
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as error:
        raise CorruptCheckpointError(f"{path.name}: not a readable .pdparams file ({type(error).__name__}: {error})")
    if not isinstance(state, Mapping):
        raise UnknownFormatError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    tensors = {}
    for key, value in state.items():
        if key == PADDLE_NAME_TABLE_KEY:
            continue
        if not isinstance(value, np.ndarray):
            raise CorruptCheckpointError(f"{path.name}: entry {key!r} is a {type(value).__name__}, not an array")
        if value.dtype == np.uint16:  # paddle.save stores bfloat16 as its raw 16 bits
            value = bf16_bits_to_float32(value)
        tensors[key] = value
    return tensors


def _to_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype == np.float16 else array
