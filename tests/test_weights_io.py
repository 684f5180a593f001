"""Reading weights: torch pickles without torch (and safely), safetensors, Paddle, sharded sets, folders."""
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy_safetensors
from safetensors.torch import save_file as save_torch_safetensors

from stable_diffusion_chinese.weights.errors import (CorruptCheckpointError, UnknownFormatError,
                                                     UnsafeCheckpointError, UnsupportedCheckpointError,
                                                     WeightsNotFoundError)
from stable_diffusion_chinese.weights.read import FOLDER_WEIGHT_FILES, read_checkpoint
from stable_diffusion_chinese.weights.torch_pickle import load_torch_file


def _sample_objects():
    """Tensors of many dtypes, views sharing one storage, a 0-d scalar, a Parameter, nesting."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    other = torch.randn(3, 5, generator=g)
    return {
        "state_dict": {
            "transposed_first": other.T,  # a view read before the tensor that owns its storage
            "other": other,
            "f32": base,
            "transposed": base.T,  # same storage, other strides
            "sliced": base[1:3, 2:5],  # same storage, offset
            "strided": base[::2, ::3],
            "row": base[2],
            "f16": torch.randn(3, 5, generator=g).half(),
            "bf16": torch.randn(2, 7, generator=g).to(torch.bfloat16),
            "f64": torch.randn(3, generator=g).double(),
            "i64": torch.arange(10, dtype=torch.int64).reshape(2, 5)[:, 1:],
            "i32": torch.tensor([-3, 7], dtype=torch.int32),
            "u8": torch.tensor([0, 255], dtype=torch.uint8),
            "u16": torch.tensor([1, 65535], dtype=torch.uint16),  # saved via _rebuild_tensor_v3 + UntypedStorage
            "bool": torch.tensor([True, False, True]),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 3),
            "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        },
        "nested": {"list": [base[0], (base[:, 1],)], "name": "x", "step": 7},
        "global_step": 100,
    }


def _expected(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _assert_same(reference, loaded, where=""):
    if isinstance(reference, torch.Tensor):
        want = _expected(reference)
        assert isinstance(loaded, np.ndarray), where
        assert loaded.dtype == want.dtype and loaded.shape == want.shape, where
        np.testing.assert_array_equal(loaded, want, err_msg=where)
    elif isinstance(reference, dict):
        assert set(reference) == set(loaded), where
        for key in reference:
            _assert_same(reference[key], loaded[key], f"{where}.{key}")
    elif isinstance(reference, (list, tuple)):
        assert type(reference) is type(loaded) and len(reference) == len(loaded), where
        for i, (a, b) in enumerate(zip(reference, loaded)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert reference == loaded, where


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_file_equals_what_torch_saved(tmp_path, zip_format):
    objects = _sample_objects()
    path = tmp_path / "sample.pt"
    torch.save(objects, path, _use_new_zipfile_serialization=zip_format)
    _assert_same(objects, load_torch_file(path))


def test_views_do_not_alias_each_other(tmp_path):
    base = torch.arange(6.0)
    torch.save({"a": base, "b": base, "c": base[:3]}, tmp_path / "x.pt")
    loaded = load_torch_file(tmp_path / "x.pt")
    loaded["a"][0] = 100.0
    assert loaded["b"][0] == 0.0 and loaded["c"][0] == 0.0


def test_read_checkpoint_unwraps_state_dict_and_widens_half(tmp_path):
    objects = _sample_objects()
    torch.save(objects, tmp_path / "model.ckpt")
    checkpoint = read_checkpoint(tmp_path / "model.ckpt")
    assert checkpoint.torch_layout and checkpoint.source.endswith("model.ckpt")
    assert set(checkpoint.tensors) == set(objects["state_dict"])
    for key, tensor in objects["state_dict"].items():
        want = _expected(tensor)
        if want.dtype == np.float16:
            want = want.astype(np.float32)
        got = checkpoint.tensors[key]
        assert got.dtype == want.dtype, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert checkpoint.tensors["f16"].dtype == np.float32 and checkpoint.tensors["bf16"].dtype == np.float32


def test_reading_works_with_torch_blocked(tmp_path):
    objects = _sample_objects()
    torch.save(objects, tmp_path / "zip.ckpt")
    torch.save(objects, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from stable_diffusion_chinese.weights.read import read_checkpoint
        for name in ("zip", "legacy"):
            tensors = read_checkpoint({str(tmp_path)!r} + f"/{{name}}.ckpt").tensors
            np.savez({str(tmp_path)!r} + f"/{{name}}.npz", **tensors)
        assert sys.modules["torch"] is None
        print("read without torch")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "read without torch" in result.stdout
    for name in ("zip", "legacy"):
        with np.load(tmp_path / f"{name}.npz") as arrays:
            assert set(arrays.files) == set(objects["state_dict"])
            for key, tensor in objects["state_dict"].items():
                np.testing.assert_array_equal(arrays[key], _expected(tensor).astype(arrays[key].dtype))


def test_training_bookkeeping_in_ldm_ckpt_is_tolerated(tmp_path, monkeypatch):
    """sd-v1-4.ckpt keys its "callbacks" dict by pytorch_lightning's ModelCheckpoint class; numpy scalars
    appear in such state. Both resolve to inert stand-ins (nothing imported, nothing called)."""
    import types

    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.setitem(sys.modules, name, module)
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 5,
                "callbacks": {ModelCheckpoint: {"best_model_score": np.float64(0.25), "dirpath": "/x"}}},
               tmp_path / "lightning.ckpt")
    raw = (tmp_path / "lightning.ckpt").read_bytes()
    assert b"ModelCheckpoint" in raw and b"multiarray" in raw
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.delitem(sys.modules, name)
    checkpoint = read_checkpoint(tmp_path / "lightning.ckpt")
    assert list(checkpoint.tensors) == ["w"]
    np.testing.assert_array_equal(checkpoint.tensors["w"], [1.0, 1.0])


# ---------------------------------------------------------------- malicious pickles

class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CallsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


def _torch_zip(path, pickled: bytes, storages=None, prefix="archive"):
    """Write a zip laid out like torch.save's."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pickled)
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"{prefix}/data/{key}", data)
        zf.writestr(f"{prefix}/version", "3\n")


@pytest.mark.parametrize("payload,global_name", [(_RunsShell, "posix.system"), (_CallsEval, "builtins.eval")])
@pytest.mark.parametrize("layout", ["zip", "plain_pickle", "legacy_after_magic"])
def test_malicious_pickle_is_refused_before_running(tmp_path, payload, global_name, layout):
    marker = tmp_path / "pwned"
    evil = {"state_dict": {"w": payload(marker)}}
    path = tmp_path / "evil.ckpt"
    if layout == "zip":
        _torch_zip(path, pickle.dumps(evil, protocol=2))
    elif layout == "plain_pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:  # torch's legacy layout: magic number, protocol, sys info, then the object
        buffer = io.BytesIO()
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, evil):
            pickle.dump(part, buffer, protocol=2)
        path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeCheckpointError, match=f"'{global_name}'"):
        read_checkpoint(path)
    assert not marker.exists()
    # the payload is real: an ordinary unpickler would have run it
    pickle.loads(pickle.dumps(payload(marker), protocol=2))
    assert marker.exists()


def test_malicious_global_inside_a_real_torch_file(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": _RunsShell(marker)}, tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        read_checkpoint(tmp_path / "model.pt")
    assert not marker.exists()


def _protocol0_tensor_pickle(size, stride, offset=0, numel=4) -> bytes:
    """A hand-written pickle: {'w': _rebuild_tensor_v2(storage(numel floats), offset, size, stride, False, {})}."""
    ints = lambda values: b"(" + b"".join(b"I%d\n" % v for v in values) + b"t"  # noqa: E731
    return (b"(dVw\n"
            b"ctorch._utils\n_rebuild_tensor_v2\n("
            b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\n" + b"I%d\n" % numel + b"tQ"
            + b"I%d\n" % offset + ints(size) + ints(stride) + b"I00\n}tRs.")


def test_hand_written_pickle_reads_and_bad_strides_are_caught(tmp_path):
    data = np.arange(4, dtype=np.float32).tobytes()
    _torch_zip(tmp_path / "ok.pt", _protocol0_tensor_pickle((2, 2), (1, 2)), {"0": data})
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "ok.pt").tensors["w"], [[0, 2], [1, 3]])
    _torch_zip(tmp_path / "bad.pt", _protocol0_tensor_pickle((2, 2), (4, 1)), {"0": data})
    with pytest.raises(CorruptCheckpointError, match="reaches past the end of storage"):
        read_checkpoint(tmp_path / "bad.pt")


# ---------------------------------------------------------------- formats, folders, errors

def test_safetensors_half_and_bfloat16_become_float32(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {"f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
               "bf16": torch.randn(2, 3, generator=g).to(torch.bfloat16), "i64": torch.arange(3)}
    save_torch_safetensors(tensors, tmp_path / "x.safetensors")
    checkpoint = read_checkpoint(tmp_path / "x.safetensors")
    assert checkpoint.torch_layout
    for key, tensor in tensors.items():
        want = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
        assert checkpoint.tensors[key].dtype == want.dtype, key
        np.testing.assert_array_equal(checkpoint.tensors[key], want)


def test_pdparams_is_paddle_layout(tmp_path):
    import paddle

    layer = paddle.nn.Linear(3, 2)
    paddle.save(layer.state_dict(), str(tmp_path / "model.pdparams"))
    checkpoint = read_checkpoint(tmp_path)
    assert not checkpoint.torch_layout and checkpoint.source.endswith("model.pdparams")
    np.testing.assert_array_equal(checkpoint.tensors["weight"], layer.weight.numpy())
    assert checkpoint.tensors["weight"].shape == (3, 2)


def test_folder_search_order(tmp_path):
    rng = np.random.default_rng(0)
    names = list(FOLDER_WEIGHT_FILES[1:])  # pdparams is covered above
    for rank, name in enumerate(reversed(names)):  # write the least preferred first
        value = {"which": np.full(1, len(names) - 1 - rank, np.float32), "x": rng.standard_normal(2).astype(np.float32)}
        if name.endswith(".safetensors"):
            save_numpy_safetensors(value, str(tmp_path / name))
        else:
            torch.save({k: torch.from_numpy(v) for k, v in value.items()}, tmp_path / name)
        assert read_checkpoint(tmp_path).tensors["which"][0] == len(names) - 1 - rank
        assert read_checkpoint(tmp_path).source.endswith(name)


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_checkpoint_is_merged(tmp_path, kind):
    rng = np.random.default_rng(2)
    shards = [{"a": rng.standard_normal(3).astype(np.float32)},
              {"b": rng.standard_normal((2, 2)).astype(np.float32), "c": np.arange(3, dtype=np.int64)}]
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"diffusion_pytorch_model-0000{i + 1}-of-00002.{kind}"
        if kind == "safetensors":
            save_numpy_safetensors(shard, str(tmp_path / name))
        else:
            torch.save({k: torch.from_numpy(v) for k, v in shard.items()}, tmp_path / name)
        weight_map.update({key: name for key in shard})
    (tmp_path / f"diffusion_pytorch_model.{kind}.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tensors = read_checkpoint(tmp_path).tensors
    assert set(tensors) == {"a", "b", "c"}
    for shard in shards:
        for key, value in shard.items():
            np.testing.assert_array_equal(tensors[key], value)
    # a shard listed but missing is named in the error
    (tmp_path / f"diffusion_pytorch_model-00002-of-00002.{kind}").unlink()
    with pytest.raises(WeightsNotFoundError, match="00002-of-00002"):
        read_checkpoint(tmp_path)


def test_clear_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="looked for model.pdparams, diffusion_pytorch_model.safetensors"):
        read_checkpoint(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="no such weights file"):
        read_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(UnknownFormatError, match="unknown weights file extension: weights.h5"):
        read_checkpoint(tmp_path / "weights.h5")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CorruptCheckpointError, match="garbage.safetensors"):
        read_checkpoint(tmp_path / "garbage.safetensors")
    (tmp_path / "text.bin").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(UnknownFormatError, match="not a torch.save file"):
        read_checkpoint(tmp_path / "text.bin")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pt")


def test_corrupt_torch_files(tmp_path):
    torch.save({"w": torch.arange(64.0)}, tmp_path / "good.pt")
    whole = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated.pt"):
        read_checkpoint(tmp_path / "truncated.pt")
    # flip bytes inside the tensor data: the zip checksum catches it
    with zipfile.ZipFile(tmp_path / "good.pt") as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/0"))
    start = whole.index(np.arange(64, dtype=np.float32).tobytes())
    assert start > info.header_offset
    damaged = bytearray(whole)
    damaged[start + 8:start + 12] = b"\xff\xff\xff\xff"
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
        read_checkpoint(tmp_path / "damaged.pt")
    # a storage shorter than the pickle says
    _torch_zip(tmp_path / "short.pt", _protocol0_tensor_pickle((4,), (1,)), {"0": b"\x00" * 8})
    with pytest.raises(CorruptCheckpointError, match="holds 8 bytes, the pickle expects 16"):
        read_checkpoint(tmp_path / "short.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_unsupported_torch_layouts(tmp_path):
    with tarfile.open(tmp_path / "old.pt", "w") as tar:
        info = tarfile.TarInfo("storages")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x80\x02K\x00"))
    with pytest.raises(UnsupportedCheckpointError, match="tar format"):
        read_checkpoint(tmp_path / "old.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "scripted.pt"))
    with pytest.raises(UnsupportedCheckpointError, match="TorchScript"):
        read_checkpoint(tmp_path / "scripted.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(UnknownFormatError, match="holds a list, not a state dict"):
        read_checkpoint(tmp_path / "list.pt")


def test_pdparams_half_precision_become_float32(tmp_path):
    import paddle

    values = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
    state = {"half": paddle.to_tensor(values).astype("float16"), "bf16": paddle.to_tensor(values).astype("bfloat16")}
    paddle.save(state, str(tmp_path / "half.pdparams"))
    tensors = read_checkpoint(tmp_path / "half.pdparams").tensors
    assert tensors["half"].dtype == np.float32 and tensors["bf16"].dtype == np.float32
    np.testing.assert_allclose(tensors["half"], values, atol=2e-3)
    np.testing.assert_allclose(tensors["bf16"], values, atol=2e-2)


def test_pdparams_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "model.pdparams", "wb") as f:
        pickle.dump({"weight": np.zeros(2, np.float32), "x": Evil()}, f)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_checkpoint(tmp_path / "model.pdparams")
    assert not marker.exists()
