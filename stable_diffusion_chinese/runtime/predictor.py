"""One exported graph behind a ``paddle.inference`` predictor: numpy arrays in, one numpy array out."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from paddle import inference

from .cpu import has_avx512f, usable_cores
from .export import GRAPH_FILE


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """How predictors run. ``threads=None`` uses every CPU this process may run on.

    ``onednn``: oneDNN kernels and fusion passes (conv+bias+activation, matmul+scale, fc) - the fast CPU
    path. ``ir_optim``: Paddle's graph optimisation passes (needed for the fusions; under PIR they include
    ``inplace_pass``). ``Config.enable_memory_optim`` is not offered: in Paddle 3.3.1 it fails under PIR
    ("Not find predictor_id 0 and pass_name memory_optimize_pass").

    ``onednn_cache_capacity``: how many input shapes keep their oneDNN primitives, each with its own
    reordered copy of every convolution/fc weight. Paddle's default (0) keeps all: measured on the SD 1.5
    UNet, peak RSS grew 6.6 -> 9.7 -> 12.9 GB over three latent sizes; with 1 it stayed at 6.6-6.9 GB and ran
    no slower. A pipeline run uses one shape per network, so 1 costs a re-creation only when the size changes.
    """

    threads: int | None = None
    onednn: bool = True
    ir_optim: bool = True
    onednn_cache_capacity: int = 1

    def __post_init__(self):
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")

    @property
    def thread_count(self) -> int:
        return self.threads or usable_cores()


class GraphPredictor:
    """A predictor for ``folder/inference.{json,pdiparams}`` whose inputs are described by ``graph_info``."""

    def __init__(self, folder: Path, graph_info: dict, options: RuntimeOptions, profile: bool = False):
        """``profile``: Paddle's per-op timing, printed to stdout when the predictor is destroyed."""
        model, params = folder / f"{GRAPH_FILE}.json", folder / f"{GRAPH_FILE}.pdiparams"
        for path in (model, params):
            if not path.is_file():
                raise FileNotFoundError(f"exported graph file {path} is missing")
        if graph_info.get("fused_attention") and not has_avx512f():
            raise RuntimeError(f"{folder} was exported with fused attention, whose Paddle kernel needs AVX-512F, "
                               "which this CPU lacks; re-export with fused_attention=False (--no-fused-attention)")
        self.input_names = [i["name"] for i in graph_info["inputs"]]
        self.input_dtypes = [np.dtype(i["dtype"]) for i in graph_info["inputs"]]
        config = _config(model, params, graph_info, options)
        if profile:
            config.enable_profile()
        self._predictor = inference.create_predictor(config)
        if self._predictor.get_input_names() != self.input_names:
            raise ValueError(f"{model} takes inputs {self._predictor.get_input_names()}, "
                             f"its export.json says {self.input_names}")
        self._output = self._predictor.get_output_names()[0]

    def run(self, *arrays: np.ndarray) -> np.ndarray:
        if len(arrays) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(arrays)}")
        for name, dtype, array in zip(self.input_names, self.input_dtypes, arrays):
            handle = self._predictor.get_input_handle(name)
            data = np.ascontiguousarray(array, dtype=dtype)
            handle.reshape(list(data.shape))
            handle.copy_from_cpu(data)
        self._predictor.run()
        return self._predictor.get_output_handle(self._output).copy_to_cpu()


def _config(model: Path, params: Path, graph_info: dict, options: RuntimeOptions) -> inference.Config:
    config = inference.Config(str(model), str(params))
    config.disable_gpu()
    config.disable_glog_info()
    config.switch_ir_optim(options.ir_optim)
    config.set_cpu_math_library_num_threads(options.thread_count)
    if options.onednn:
        config.enable_onednn()
        config.set_onednn_cache_capacity(options.onednn_cache_capacity)
        if graph_info.get("upsamples"):
            # Paddle 3.3.1: the oneDNN nearest_interp kernel cannot run under PIR (see export.py). The
            # placement pass is what moves it (and plain elementwise ops) to oneDNN; without it, the
            # fusion passes still run convolutions, matmuls and fc layers on oneDNN, which is where the
            # time goes (measured: equal speed on a UNet transformer block with and without placement).
            config.delete_pass("onednn_placement_pass")
    else:
        config.disable_onednn()
    return config
