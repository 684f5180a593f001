"""Read files written by ``torch.save`` with numpy alone, never running code from the file.

A ``torch.save`` file is a pickle. Unpickling runs whatever callables the pickle names, so a checkpoint
from the internet can execute code (``os.system`` via ``__reduce__``). Here the unpickler resolves only
the handful of globals that rebuild tensors, and each resolves to a function of ours that builds a numpy
array; any other global is refused with ``UnsafeCheckpointError`` before anything is called.

Layouts (facts read from torch/serialization.py and torch/_utils.py of torch 2.x):

- zip (default since torch 1.6): ``<prefix>/data.pkl`` is the pickle; each tensor is
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`` (or
  ``_rebuild_tensor_v3(..., dtype, metadata)`` for dtypes without a typed storage class, e.g. uint16);
  ``storage`` comes from ``persistent_load(("storage", torch.FloatStorage, key, location, numel))`` and its
  raw bytes are the member ``<prefix>/data/<key>``; ``<prefix>/byteorder`` is "little" or "big".
- legacy (``_use_new_zipfile_serialization=False``): consecutive pickles of the magic number
  0x1950A86A20F9469CFC6C, protocol 1001, a sys-info dict, the object (persistent ids carry a sixth
  field, ``view_metadata``), the list of storage keys; then per key an int64 element count and raw bytes.
- tar (torch < 0.4) and TorchScript archives are recognised and refused.

bfloat16 tensors come back as float32 (numpy has no bfloat16; widening is exact); every other dtype
comes back as the same numpy dtype.
"""
from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Callable

import numpy as np

from .errors import CorruptCheckpointError, UnknownFormatError, UnsafeCheckpointError, UnsupportedCheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


@dataclasses.dataclass(frozen=True)
class ElementType:
    """A torch element type: its name, the numpy dtype of its raw bytes, and whether those are bf16 bits."""

    name: str
    dtype: np.dtype
    bfloat16: bool = False


def _types(pairs: dict[str, Any]) -> dict[str, ElementType]:
    return {name: ElementType(name, np.dtype(np.uint16 if dt == "bf16" else dt), dt == "bf16")
            for name, dt in pairs.items()}


# torch's typed storage classes (torch/storage.py, `_pickle_storage_type`) -> raw element type.
STORAGE_TYPES = _types({
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bf16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
})
UNTYPED_STORAGE = ElementType("UntypedStorage", np.dtype(np.uint8))

# torch.dtype globals, as named by `_rebuild_tensor_v3` pickles (torch.<name>).
TORCH_DTYPES = _types({
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": "bf16",
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
})


class _Storage:
    """One torch storage: raw bytes filled in from the file, viewed as its element type."""

    def __init__(self, key: str, element: ElementType, numel: int):
        self.key, self.element, self.numel = key, element, numel
        self.raw: np.ndarray | None = None  # uint8, set once the bytes are read
        self.root: tuple[_Storage, int] | None = None  # legacy storage views: (root, element offset)
        self.handed_out = False  # a tensor already owns this buffer without a copy

    def elements(self, byteorder: str) -> np.ndarray:
        if self.root is not None:
            root, offset = self.root
            return root.elements(byteorder)[offset:offset + self.numel]
        if self.raw is None:
            raise CorruptCheckpointError(f"storage {self.key!r} has no data in the file")
        dtype = self.element.dtype
        if byteorder == "big" and dtype.itemsize > 1:
            return self.raw.view(dtype.newbyteorder(">")).astype(dtype)
        return self.raw.view(dtype)


class _TensorRef:
    """A tensor as the pickle describes it; turned into a numpy array once its storage bytes are read."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, element: ElementType | None = None):
        if not isinstance(storage, _Storage):
            raise CorruptCheckpointError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
        self.storage = storage
        self.offset = _non_negative_int(offset, "storage offset")
        self.size = tuple(_non_negative_int(s, "size") for s in _sequence(size, "size"))
        self.stride = tuple(_non_negative_int(s, "stride") for s in _sequence(stride, "stride"))
        if len(self.size) != len(self.stride):
            raise CorruptCheckpointError(f"tensor size {self.size} and stride {self.stride} differ in length")
        self.element = element or storage.element

    def to_numpy(self, byteorder: str) -> np.ndarray:
        elements = self.storage.elements(byteorder)
        if self.element != self.storage.element:  # _rebuild_tensor_v3 over an untyped (byte) storage
            if elements.nbytes % self.element.dtype.itemsize:
                raise CorruptCheckpointError(f"storage {self.storage.key!r} is not a whole number of "
                                             f"{self.element.name} elements")
            elements = elements.view(self.element.dtype)
        array = self._strided(elements)
        if self.element.bfloat16:  # bf16 is the top half of a float32: shift the bits back into place
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array

    def _strided(self, elements: np.ndarray) -> np.ndarray:
        numel = math.prod(self.size)  # Python ints: no overflow on hostile sizes
        if numel == 0:
            return np.empty(self.size, dtype=elements.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= elements.size:
            raise CorruptCheckpointError(
                f"tensor of size {self.size} (offset {self.offset}, stride {self.stride}) reaches past the "
                f"end of storage {self.storage.key!r} ({elements.size} elements)")
        if self._covers_whole(elements.size, numel) and not self.storage.handed_out and self.storage.root is None:
            self.storage.handed_out = True  # the first tensor that is the whole storage keeps its buffer
            return elements.reshape(self.size)
        item = elements.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(elements[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride], writeable=False)
        return view.copy()

    def _covers_whole(self, storage_numel: int, numel: int) -> bool:
        if self.offset != 0 or numel != storage_numel:
            return False
        expected = 1
        for n, s in reversed(list(zip(self.size, self.stride))):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True


def _sequence(value: Any, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise CorruptCheckpointError(f"tensor {what} is a {type(value).__name__}, not a tuple")
    return tuple(value)


def _non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptCheckpointError(f"tensor {what} {value!r} is not a non-negative integer")
    return value


def _check_metadata(metadata: Any) -> None:
    # torch stores conj/neg bits here (torch._utils.get_tensor_metadata); real weights never set them.
    if metadata and any(metadata.values()):
        raise UnsupportedCheckpointError(f"tensor with lazy conjugate/negative bits {metadata} is not supported")


# Our stand-ins for the globals a tensor pickle names (signatures as in torch/_utils.py).
def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    _check_metadata(metadata)
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, ElementType):
        raise CorruptCheckpointError(f"_rebuild_tensor_v3 got dtype {dtype!r}, not a torch dtype")
    _check_metadata(metadata)
    return _TensorRef(storage, storage_offset, size, stride, element=dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, _TensorRef):
        raise CorruptCheckpointError(f"parameter rebuilt from {type(data).__name__}, not from a tensor")
    return data


def _torch_size(dims=()):
    return tuple(_non_negative_int(d, "size") for d in _sequence(dims, "size"))


def _codecs_encode(text, encoding="utf-8"):
    # protocol-2 pickles write bytes as _codecs.encode(str, "latin1"); allow exactly that and nothing else
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpointError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


class _InertObject:
    """Stand-in instance for training bookkeeping (lightning callbacks, numpy scalars): holds nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert_class(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_InertObject,), {"__module__": __name__, "__qualname__": name})


# Globals that LDM .ckpt files carry outside the weights (e.g. sd-v1-4.ckpt's "callbacks" dict is keyed by
# pytorch_lightning's ModelCheckpoint class). They resolve to empty stand-ins: nothing of theirs is imported
# or called, and they never reach a state dict.
INERT_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
)


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch.Size": _torch_size,
        "collections.OrderedDict": collections.OrderedDict,
        "_codecs.encode": _codecs_encode,
        "torch.UntypedStorage": UNTYPED_STORAGE,
        "torch.storage.UntypedStorage": UNTYPED_STORAGE,
    }
    allowed.update({f"torch.{name}": element for name, element in STORAGE_TYPES.items()})
    allowed.update({f"torch.{name}": element for name, element in TORCH_DTYPES.items()})
    allowed.update({name: _inert_class(name) for name in INERT_GLOBALS})
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``ALLOWED_GLOBALS``; storages come from ``load_storage``."""

    def __init__(self, file: BinaryIO, source: str, load_storage: Callable[[tuple], _Storage] | None = None):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles written by Python 3 use Python 2 module names (builtins -> __builtin__)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f"{module}.{name}"
        if qualified in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[qualified]
        raise UnsafeCheckpointError(
            f"{self.source}: refusing to unpickle the global '{qualified}': it is not needed to rebuild "
            f"tensors and loading it could run arbitrary code. Only plain torch tensor checkpoints are read.")

    def persistent_load(self, pid: Any) -> Any:
        if self.load_storage is None:
            raise CorruptCheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
            raise CorruptCheckpointError(f"{self.source}: persistent id {pid!r} is not a storage reference")
        return self.load_storage(pid)


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_from_pid(pid: tuple, storages: dict[str, _Storage], source: str) -> _Storage:
    """Shared part of both formats: ``("storage", type, key, location, numel, ...)`` -> cached ``_Storage``."""
    if len(pid) < 5:
        raise CorruptCheckpointError(f"{source}: storage reference {pid!r} is too short")
    _, element, key, _location, numel = pid[:5]
    key = str(_ascii(key))
    if not isinstance(element, ElementType):
        raise CorruptCheckpointError(f"{source}: storage {key!r} has type {element!r}, not a torch storage type")
    numel = _non_negative_int(numel, "storage size")
    storage = storages.get(key)
    if storage is None:
        storage = storages[key] = _Storage(key, element, numel)
    elif storage.element != element:
        raise CorruptCheckpointError(f"{source}: storage {key!r} is used as two element types")
    return storage


def _materialize(obj: Any, byteorder: str) -> Any:
    """Replace every ``_TensorRef`` inside dicts, lists and tuples by its numpy array."""
    if isinstance(obj, _TensorRef):
        return obj.to_numpy(byteorder)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialize(value, byteorder)
        return out
    if isinstance(obj, list):
        return [_materialize(v, byteorder) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, byteorder) for v in obj)
    return obj


def _unpickle(unpickler: _RestrictedUnpickler) -> Any:
    try:
        return unpickler.load()
    except (UnsafeCheckpointError, CorruptCheckpointError, UnsupportedCheckpointError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, UnicodeDecodeError, MemoryError, RecursionError) as error:
        raise CorruptCheckpointError(f"{unpickler.source}: broken pickle data ({type(error).__name__}: {error})")


# ---------------------------------------------------------------- zip format

def _archive_prefix(zf: zipfile.ZipFile, source: str) -> str:
    names = zf.namelist()
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
        raise UnsupportedCheckpointError(f"{source} is a TorchScript archive (torch.jit.save); only torch.save "
                                         "state dicts are supported")
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) == 1:
        return pickles[0][: -len("data.pkl")]
    if "data.pkl" in names:
        return ""
    if pickles:
        raise CorruptCheckpointError(f"{source}: several data.pkl records ({', '.join(pickles)})")
    raise UnknownFormatError(f"{source} is a zip archive without data.pkl, not a torch.save file")


def _read_member(zf: zipfile.ZipFile, fh: BinaryIO, info: zipfile.ZipInfo, nbytes: int, source: str) -> np.ndarray:
    """The first ``nbytes`` of a member as a writable uint8 array (stored members read straight from disk)."""
    if info.file_size < nbytes:
        raise CorruptCheckpointError(f"{source}: {info.filename} holds {info.file_size} bytes, the pickle "
                                     f"expects {nbytes}")
    if info.compress_type != zipfile.ZIP_STORED:
        return np.frombuffer(zf.read(info), dtype=np.uint8)[:nbytes].copy()
    fh.seek(info.header_offset)
    header = fh.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise CorruptCheckpointError(f"{source}: bad local zip header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    data = np.empty(info.file_size, dtype=np.uint8)
    if fh.readinto(memoryview(data)) != info.file_size:
        raise CorruptCheckpointError(f"{source}: {info.filename} is truncated")
    if zlib.crc32(data) != info.CRC:
        raise CorruptCheckpointError(f"{source}: checksum mismatch in {info.filename}")
    return data[:nbytes]


def _load_zip(path: str, source: str) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CorruptCheckpointError(f"{source}: broken zip archive ({error})")
    with zf, open(path, "rb") as fh:
        prefix = _archive_prefix(zf, source)
        names = set(zf.namelist())
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise CorruptCheckpointError(f"{source}: unknown byte order {byteorder!r}")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            if len(pid) != 5:
                raise CorruptCheckpointError(f"{source}: storage reference {pid!r} has {len(pid)} fields, not 5")
            storage = _storage_from_pid(pid, storages, source)
            if storage.raw is None:
                member = f"{prefix}data/{storage.key}"
                if member not in names:
                    raise CorruptCheckpointError(f"{source}: storage {member} is missing from the archive")
                nbytes = storage.numel * storage.element.dtype.itemsize
                storage.raw = _read_member(zf, fh, zf.getinfo(member), nbytes, source)
            return storage

        try:
            pickled = zf.read(prefix + "data.pkl")
        except (zipfile.BadZipFile, zlib.error) as error:
            raise CorruptCheckpointError(f"{source}: data.pkl cannot be read ({error})")
        obj = _unpickle(_RestrictedUnpickler(io.BytesIO(pickled), source, load_storage))
        return _materialize(obj, byteorder)


# ---------------------------------------------------------------- legacy format

def _load_legacy(path: str, source: str) -> Any:
    with open(path, "rb") as fh:
        if _unpickle(_RestrictedUnpickler(fh, source)) != LEGACY_MAGIC_NUMBER:
            raise UnknownFormatError(f"{source} is a pickle but not a torch.save file (no torch magic number)")
        version = _unpickle(_RestrictedUnpickler(fh, source))
        if version != LEGACY_PROTOCOL_VERSION:
            raise UnsupportedCheckpointError(f"{source}: legacy torch protocol version {version!r} is not supported")
        sys_info = _unpickle(_RestrictedUnpickler(fh, source))
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        byteorder = "little" if little else "big"
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            if len(pid) == 6 and pid[5] is not None:
                return _legacy_view(pid, storages, source)
            return _storage_from_pid(pid, storages, source)

        obj = _unpickle(_RestrictedUnpickler(fh, source, load_storage))
        keys = _unpickle(_RestrictedUnpickler(fh, source))
        if not isinstance(keys, list):
            raise CorruptCheckpointError(f"{source}: storage key list missing after the object")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise CorruptCheckpointError(f"{source}: storage {key!r} is listed but never used")
            count_bytes = fh.read(8)
            if len(count_bytes) != 8:
                raise CorruptCheckpointError(f"{source}: file ends before storage {key!r}")
            (count,) = struct.unpack("<q" if little else ">q", count_bytes)
            nbytes = count * storage.element.dtype.itemsize
            if count < storage.numel:
                raise CorruptCheckpointError(f"{source}: storage {key!r} holds {count} elements, expected "
                                             f"{storage.numel}")
            storage.raw = np.empty(nbytes, dtype=np.uint8)
            if fh.readinto(memoryview(storage.raw)) != nbytes:
                raise CorruptCheckpointError(f"{source}: storage {key!r} is truncated")
        return _materialize(obj, byteorder)


def _legacy_view(pid: tuple, storages: dict[str, _Storage], source: str) -> _Storage:
    """Old torch saved storage slices as views on a root storage: ``(view_key, offset, size)``."""
    root = _storage_from_pid(pid, storages, source)
    view_key, offset, size = _sequence(pid[5], "view metadata")
    view_key = str(_ascii(view_key))
    if view_key not in storages:
        view = _Storage(view_key, root.element, _non_negative_int(size, "view size"))
        view.root = (root, _non_negative_int(offset, "view offset"))
        storages[view_key] = view
    return storages[view_key]


# ---------------------------------------------------------------- entry point

def load_torch_file(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` file safely; tensors come back as numpy arrays (bf16 widened to float32)."""
    path = os.fspath(path)
    source = os.path.basename(path)
    try:
        return _load(path, source)
    except RecursionError:
        raise CorruptCheckpointError(f"{source}: objects nested too deeply to be a state dict") from None
    except MemoryError:
        raise CorruptCheckpointError(f"{source}: a tensor is too large to hold in memory") from None


def _load(path: str, source: str) -> Any:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04"):
        return _load_zip(path, source)
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise UnsupportedCheckpointError(f"{source} uses torch's tar format (torch < 0.4), which is not supported; "
                                         "re-save it with a recent torch")
    if head[:1] == b"\x80":
        return _load_legacy(path, source)
    if not head:
        raise CorruptCheckpointError(f"{source} is empty")
    raise UnknownFormatError(f"{source} is neither a zip archive nor a pickle; not a torch.save file")
