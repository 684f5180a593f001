"""Export a pipeline's networks to static Paddle programs (``paddle.jit.to_static`` + ``paddle.jit.save``).

Layout of an export folder::

    export.json                  what is in here (format, Paddle version, per-graph class and inputs)
    text_encoder/ unet/ vae_decoder/ vae_encoder/
        inference.json           the static program (PIR)
        inference.pdiparams      its weights
        config.json              the network's config (the predictor-backed components expose it)
    scheduler/ tokenizer/        when known (a scheduler object saves itself; a tokenizer folder is copied)

Batch, token count and image size are dynamic (``None`` in the InputSpec), so one export serves every size.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import paddle

from ..models.transformer import Attention
from .cpu import has_avx512f
from .graphs import GRAPHS, to_static

EXPORT_INDEX = "export.json"
EXPORT_FORMAT = 1
GRAPH_FILE = "inference"  # -> inference.json + inference.pdiparams
ALL_GRAPHS = tuple(GRAPHS)


def export_model(source: Any, out_dir, *, graphs: tuple[str, ...] = ALL_GRAPHS,
                 fused_attention: bool | None = None, tokenizer_folder=None, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> Path:
    """Export ``source``'s networks to ``out_dir`` and return it.

    ``source`` is a ``StableDiffusionPipeline`` or a mapping with ``unet``, ``vae`` and ``text_encoder``
    (and optionally ``scheduler``). ``fused_attention`` puts Paddle's fused CPU self-attention kernel into
    the UNet and VAE graphs; it needs AVX-512F wherever the export runs, so the default (None) is "if this
    CPU has AVX-512F". Attention slicing set on the eager model is not exported (static graphs have no
    concrete sizes to slice by); VAE tiling is applied by the inference VAE at run time, not in the graph.
    """
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown or not graphs:
        raise ValueError(f"graphs must be a non-empty subset of {ALL_GRAPHS}, got {graphs!r}")
    parts = _components(source, sorted({GRAPHS[g][1] for g in graphs}))
    fused = has_avx512f() if fused_attention is None else bool(fused_attention)
    if fused and not has_avx512f():
        raise ValueError("fused_attention=True needs a CPU with AVX-512F (Paddle's self_dp_attention kernel)")
    out = _prepare_folder(Path(out_dir), overwrite)
    index = {"format": EXPORT_FORMAT, "paddle_version": paddle.__version__, "fused_attention": fused,
             "model_name": parts["model_name"] or "", "graphs": {}}
    if parts["generation_defaults"] is not None:
        index.update(parts["generation_defaults"].as_index_entry())
    for name in graphs:
        if progress:
            progress(name)
        index["graphs"][name] = _export_graph(name, parts[GRAPHS[name][1]], out / name, fused)
    scheduler = parts.get("scheduler")
    if scheduler is not None:
        scheduler.save_pretrained(out / "scheduler")
    if tokenizer_folder is not None:
        shutil.copytree(tokenizer_folder, out / "tokenizer")
    (out / EXPORT_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return out


def read_export_index(folder) -> dict:
    path = Path(folder) / EXPORT_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an export folder: it has no {EXPORT_INDEX} "
                                "(write one with `python -m stable_diffusion_chinese export MODEL OUT`)")
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} has export format {index.get('format')!r}; this version reads {EXPORT_FORMAT}")
    return index


def network_class(qualified: str) -> type:
    """The class an export recorded as ``module:Class`` (only this package's modules are imported)."""
    module_name, _, class_name = qualified.partition(":")
    if not module_name.startswith("stable_diffusion_chinese.") or not class_name:
        raise ValueError(f"export names an unexpected network class {qualified!r}")
    return getattr(importlib.import_module(module_name), class_name)


def _components(source: Any, needed: list[str]) -> dict[str, Any]:
    names = ("unet", "vae", "text_encoder", "scheduler", "model_name", "generation_defaults")
    if isinstance(source, Mapping):
        parts = {n: source.get(n) for n in names}
    else:
        parts = {n: getattr(source, n, None) for n in names}
    missing = [n for n in needed if parts[n] is None]
    if missing:
        raise TypeError(f"export_model needs a pipeline or a mapping with the networks to export; "
                        f"missing: {', '.join(missing)}")
    for n in needed:
        if not isinstance(parts[n], paddle.nn.Layer):
            raise TypeError(f"{n} must be an eager Paddle network to export, got {type(parts[n]).__name__} "
                            "(an already exported component cannot be exported again)")
    return parts


def _prepare_folder(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace its export")
        for name in list(GRAPHS) + ["scheduler", "tokenizer", EXPORT_INDEX]:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _export_graph(name: str, network: paddle.nn.Layer, folder: Path, fused: bool) -> dict:
    wrapper_class = GRAPHS[name][0]
    inputs = wrapper_class.inputs(network)
    with _attention_for_export(network, fused):
        static = to_static(wrapper_class(network), inputs)
        paddle.jit.save(static, str(folder / GRAPH_FILE))
        ops = {op.name() for op in static.forward.concrete_program.main_program.global_block().ops}
    network.config.save_json(folder / "config.json")
    cls = type(network)
    return {"class": f"{cls.__module__}:{cls.__qualname__}",
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs],
            # Paddle 3.3.1's oneDNN nearest_interp kernel fails under PIR ("ConvertPirAttribute2RuntimeAttribute
            # not support [pir::ArrayAttribute<pir::DoubleAttribute>]"), so graphs that upsample must keep
            # that op off oneDNN (predictor.py)
            "upsamples": "pd_op.nearest_interp" in ops,
            "fused_attention": "pd_op.self_dp_attention" in ops}


@contextlib.contextmanager
def _attention_for_export(network: paddle.nn.Layer, fused: bool) -> Iterator[None]:
    """Trace with slicing off and, if asked, the fused kernel on; the eager model is restored afterwards."""
    layers = [layer for layer in network.sublayers() if isinstance(layer, Attention)]
    saved = [(layer.max_scores, layer.fused_self_attention) for layer in layers]
    try:
        for layer in layers:
            layer.max_scores, layer.fused_self_attention = None, fused
        yield
    finally:
        for layer, (budget, was_fused) in zip(layers, saved):
            layer.max_scores, layer.fused_self_attention = budget, was_fused
