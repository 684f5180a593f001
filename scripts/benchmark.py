"""CPU speed of our engine (eager Paddle and Paddle Inference) against PyTorch diffusers/transformers.

Same architecture (SD 1.5 UNet, VAE, CLIP text encoder; Taiyi's BERT), same random weights (diffusers and
transformers build and save them; our loaders read the saved files), identical numpy inputs, fp32.

Each framework runs in its own worker process, one group of cases at a time, so that the peak RSS
reported for a framework is its own (ru_maxrss of its worker: weights + activations + the framework). The
parent interleaves the workers: every repetition runs each framework once, in an order rotated per
repetition, so a change in machine load hits all frameworks alike. After one untimed warm-up run per
framework, the median of the repetitions is reported with its ratio to PyTorch's, the largest output
difference from PyTorch and, for the UNet and the VAE decoder, the achieved GFLOP/s against this CPU's fp32 peak.

    python scripts/benchmark.py [--quick] [--only unet64,vae512,...] [--threads 2] [--reps N]
                                [--workdir DIR] [--profile]

``--workdir`` keeps the generated weights and exports between runs (they take minutes to build).
``--quick``: two repetitions and no 20-step generation. ``--profile``: Paddle Inference per-op times for
the UNet step and the VAE decode. ``--only unet128,vae1024,vae1024t``: the 1024^2 memory cases (not in the
default set; one cold run per framework, frameworks one after another). The 20-step generation also runs
one framework after another, one timed run each after an untimed 2-step warm-up (eager Paddle alone takes
~20 min for it). Needs ~16 GB free for the UNet group, ~11 GB for the generation. A full run takes ~75 min.
Not a test; see docs/speed.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "reference_configs"
FRAMEWORKS = ("torch", "paddle", "inference")
LABELS = {"torch": "PyTorch", "paddle": "Paddle eager", "inference": "Paddle Inference"}

#: case -> (group of cases sharing one set of worker processes and one model load, description)
CASES = {
    "unet64": ("unet", "UNet step, 64x64 latents (512^2), batch 2"),
    "unet32": ("unet", "UNet step, 32x32 latents (256^2), batch 2"),
    "vae512": ("vae", "VAE decode, 512^2"),
    "vae256": ("vae", "VAE decode, 256^2"),
    "clip77": ("clip", "CLIP text encoder, 77 tokens, batch 2"),
    "bert512": ("bert", "Taiyi BERT text encoder, 512 tokens, batch 2"),
    "gen20": ("gen", "20-step 512^2 generation (DPM++ 2M, CFG 7.5)"),
    # 1024^2, only with --only (slow; for the memory options)
    "unet128": ("unet1024", "UNet step, 128x128 latents (1024^2), batch 2; eager Paddle with attention slicing"),
    "vae1024": ("vae1024", "VAE decode, 1024^2, whole image"),
    "vae1024t": ("vae1024t", "VAE decode, 1024^2, in 512^2 tiles (VAE tiling, all frameworks)"),
}
LARGE = ("unet128", "vae1024", "vae1024t")
#: cases run one framework after another, one timed run each: three 20-step workers at once would need
#: ~23 GB (PyTorch 5.6, eager Paddle ~10, Paddle Inference ~7.5) and an eager 20-step run takes ~20 min
SEQUENTIAL = LARGE + ("gen20",)
#: untimed warm-up before the timed run (the same shapes, so oneDNN primitives and caches exist)
WARMUP = {"gen20": {"steps": 2}}
#: group -> (network it loads, memory option applied after loading)
GROUPS = {"unet": ("unet", None), "vae": ("vae", None), "clip": ("clip", None), "bert": ("bert", None),
          "gen": ("gen", None), "unet1024": ("unet", "slicing"), "vae1024": ("vae", None),
          "vae1024t": ("vae", "tiling")}
FULL_REPS = {"unet64": 3, "vae512": 3}
PROMPT, NEGATIVE = "a watercolor landscape 水墨山水", "blurry"
# fp32 FLOP per cycle per core with two 256-bit FMA pipes: 2 pipes x 8 lanes x 2 (multiply + add).
# (Zen 4's AVX-512 runs as two 256-bit halves: the same peak.)
FLOP_PER_CYCLE = 32
MARK = "@@bench "


def config(name: str) -> dict:
    values = json.loads((CONFIGS / name).read_text())
    values.pop("_use_default_values", None)
    return values


# ------------------------------------------------------------------------------------------------ inputs


def case_inputs(case: str) -> dict:
    rng = np.random.default_rng(0)
    size = int(re.sub(r"\D", "", case))
    if case.startswith("unet"):
        side = size
        return {"sample": rng.standard_normal((2, 4, side, side)).astype("float32"),
                "timestep": np.array([801.0, 801.0], "float32"),
                "context": rng.standard_normal((2, 77, 768)).astype("float32")}
    if case.startswith("vae"):
        side = size // 8
        return {"latents": rng.standard_normal((1, 4, side, side)).astype("float32")}
    if case == "clip77":
        return {"ids": rng.integers(0, 49408, (2, 77)).astype("int64")}
    if case == "bert512":
        return {"ids": rng.integers(1, 21128, (2, 512)).astype("int64")}
    if case == "gen20":
        return {"latents": rng.standard_normal((1, 4, 64, 64)).astype("float32")}
    raise ValueError(case)


# ------------------------------------------------------------------------------------ building the models


def build_models(workdir: Path, groups: set[str]) -> None:
    """Random SD 1.5 components saved by diffusers (and a Taiyi-sized BERT by transformers), then our exports."""
    import torch

    model, bert = workdir / "sd15", workdir / "bert"
    if groups - {"bert"} and not (model / "model_index.json").is_file():
        import diffusers
        import transformers
        print("building random SD 1.5 weights with diffusers ...", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        scheduler = diffusers.DPMSolverMultistepScheduler.from_config(config("scheduler_dpmsolver_sd15.json"))
        pipe = diffusers.StableDiffusionPipeline(
            unet=diffusers.UNet2DConditionModel.from_config(config("unet_sd15.json")).eval(),
            vae=diffusers.AutoencoderKL.from_config(config("vae_sd15.json")).eval(),
            text_encoder=transformers.CLIPTextModel(transformers.CLIPTextConfig(**config("clip_text_sd15.json"))).eval(),
            # a real CLIP vocabulary cannot be downloaded here; the tiny tokenizer's ids fit the full-size encoder
            tokenizer=transformers.CLIPTokenizer.from_pretrained(str(CONFIGS / "tokenizer_tiny_clip")),
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(model, safe_serialization=True)
    if "bert" in groups and not (bert / "config.json").is_file():
        import transformers
        torch.manual_seed(0)
        ref = transformers.BertModel(transformers.BertConfig(**config("bert_taiyi.json")), add_pooling_layer=False)
        ref.save_pretrained(bert, safe_serialization=True)


def export_models(workdir: Path, groups: set[str]) -> None:
    from stable_diffusion_chinese.runtime import export_folder, export_model
    from stable_diffusion_chinese.text import BertTextEncoder

    if groups - {"bert"} and not (workdir / "sd15_export" / "export.json").is_file():
        print("exporting SD 1.5 graphs ...", file=sys.stderr, flush=True)
        export_folder(workdir / "sd15", workdir / "sd15_export", overwrite=True)
    if "bert" in groups and not (workdir / "bert_export" / "export.json").is_file():
        bert = BertTextEncoder.from_pretrained(workdir / "bert")
        export_model({"text_encoder": bert}, workdir / "bert_export", graphs=("text_encoder",), overwrite=True)


# ------------------------------------------------------------------------------------------- the workers


class TorchSide:
    def __init__(self, workdir: Path, threads: int):
        import torch
        torch.set_num_threads(threads)
        self.torch, self.workdir, self.models = torch, workdir, {}

    def load(self, group: str) -> None:
        import diffusers
        import transformers
        model = self.workdir / "sd15"
        group, option = GROUPS[group]
        if group == "unet":
            self.models["unet"] = diffusers.UNet2DConditionModel.from_pretrained(model / "unet").eval()
        elif group == "vae":
            self.models["vae"] = diffusers.AutoencoderKL.from_pretrained(model / "vae").eval()
        elif group == "clip":
            self.models["clip"] = transformers.CLIPTextModel.from_pretrained(model / "text_encoder").eval()
        elif group == "bert":
            self.models["bert"] = transformers.BertModel.from_pretrained(self.workdir / "bert",
                                                                         add_pooling_layer=False).eval()
        elif group == "gen":
            self.models["gen"] = diffusers.StableDiffusionPipeline.from_pretrained(
                model, safety_checker=None, requires_safety_checker=False)
        if option == "tiling":
            self.models["vae"].enable_tiling()
        # "slicing": diffusers' default attention is already SDPA, which never holds the score matrix

    def run(self, case: str, x: dict, steps: int = 20) -> np.ndarray:
        t = self.torch
        with t.inference_mode():
            if case.startswith("unet"):
                return self.models["unet"](t.from_numpy(x["sample"]), t.from_numpy(x["timestep"]),
                                           t.from_numpy(x["context"])).sample.numpy()
            if case.startswith("vae"):
                return self.models["vae"].decode(t.from_numpy(x["latents"])).sample.numpy()
            if case == "clip77":
                return self.models["clip"](t.from_numpy(x["ids"])).last_hidden_state.numpy()
            if case == "bert512":
                return self.models["bert"](t.from_numpy(x["ids"])).last_hidden_state.numpy()
            images = self.models["gen"](PROMPT, negative_prompt=NEGATIVE, height=512, width=512, num_inference_steps=steps,
                                        guidance_scale=7.5, latents=t.from_numpy(x["latents"]), output_type="np",
                                        ).images
            return np.asarray(images)


class PaddleSide:
    """Eager Paddle (``inference=False``) or Paddle Inference predictors on the exports."""

    def __init__(self, workdir: Path, threads: int, inference: bool):
        import paddle
        paddle.set_device("cpu")
        self.paddle, self.workdir, self.threads, self.inference, self.models = paddle, workdir, threads, inference, {}

    def load(self, group: str) -> None:
        from stable_diffusion_chinese.runtime import enable_attention_slicing, enable_vae_tiling
        group, option = GROUPS[group]
        if self.inference:
            self._load_inference(group)
        else:
            self._load_eager(group)
        if option == "tiling":
            enable_vae_tiling(self.models[group])
        elif option == "slicing" and not self.inference:  # exported graphs use the fused kernel instead
            enable_attention_slicing(self.models[group])

    def _load_eager(self, group: str) -> None:
        from stable_diffusion_chinese.models.unet import UNet2DConditionModel
        from stable_diffusion_chinese.models.vae import AutoencoderKL
        from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline
        from stable_diffusion_chinese.text import BertTextEncoder, CLIPTextEncoder
        model = self.workdir / "sd15"
        loaders = {"unet": lambda: UNet2DConditionModel.from_pretrained(model / "unet"),
                   "vae": lambda: AutoencoderKL.from_pretrained(model / "vae"),
                   "clip": lambda: CLIPTextEncoder.from_pretrained(model / "text_encoder"),
                   "bert": lambda: BertTextEncoder.from_pretrained(self.workdir / "bert"),
                   "gen": lambda: StableDiffusionPipeline.from_pretrained(model)}
        self.models[group] = loaders[group]()

    def _load_inference(self, group: str) -> None:
        from stable_diffusion_chinese.runtime import RuntimeOptions, load_exported, load_pipeline
        options = RuntimeOptions(threads=self.threads)
        export = self.workdir / "sd15_export"
        if group == "gen":
            self.models[group] = load_pipeline(export, runtime="inference", threads=self.threads)
        elif group == "bert":
            self.models[group] = load_exported(self.workdir / "bert_export", options, graphs=("text_encoder",))["text_encoder"]
        else:
            graph = {"unet": "unet", "vae": "vae_decoder", "clip": "text_encoder"}[group]
            parts = load_exported(export, options, graphs=(graph,))
            self.models[group] = parts["vae" if group == "vae" else "unet" if group == "unet" else "text_encoder"]

    def run(self, case: str, x: dict, steps: int = 20) -> np.ndarray:
        group = GROUPS[CASES[case][0]][0]
        model = self.models[group]
        with self.paddle.no_grad():
            if group == "unet":
                return model(x["sample"], x["timestep"], x["context"]).numpy()
            if group == "vae":
                return model.decode(x["latents"]).numpy()
            if group in ("clip", "bert"):
                return model.encode(x["ids"]).numpy()
            return model(PROMPT, negative_prompt=NEGATIVE, height=512, width=512, num_inference_steps=steps,
                         guidance_scale=7.5, latents=x["latents"], output_type="numpy", progress=False).images

    def flops(self, case: str) -> dict:
        """The UNet's or the VAE decoder's FLOPs at this case's size (eager only)."""
        x, small = case_inputs(case), 8
        if case.startswith("unet"):
            unet = self.models["unet"]
            return counted_flops(unet, lambda: unet(x["sample"][:, :, :small, :small], x["timestep"], x["context"]),
                                 area=x["sample"].shape[2] * x["sample"].shape[3] / small ** 2)
        vae = self.models["vae"]
        return counted_flops(vae, lambda: vae.decode(x["latents"][:, :, :small, :small]),
                             area=x["latents"].shape[2] * x["latents"].shape[3] / small ** 2)

    def profile(self, case: str, x: dict) -> None:
        """Per-op times of Paddle Inference (Paddle prints its table when the predictor is destroyed)."""
        from stable_diffusion_chinese.runtime.predictor import GraphPredictor, RuntimeOptions
        from stable_diffusion_chinese.runtime import read_export_index
        export = self.workdir / "sd15_export"
        graph = "unet" if case.startswith("unet") else "vae_decoder"
        info = read_export_index(export)["graphs"][graph]
        predictor = GraphPredictor(export / graph, info, RuntimeOptions(threads=self.threads), profile=True)
        args = (x["sample"], x["timestep"], x["context"]) if graph == "unet" else (x["latents"],)
        predictor.run(*args)
        predictor.run(*args)
        del predictor


def counted_flops(network, run_small, area: float) -> dict:
    """Multiply-adds x 2 of convolutions, linear layers and attention products, by forward hooks.

    ``run_small`` runs ``network`` at 8x8 latents; the count is then scaled by ``area`` (the case's latent
    area over 8x8): everything grows with the area except self-attention's two [L x L] products, which
    grow with its square (all levels of the UNet and the VAE decoder scale alike).
    """
    import paddle
    from paddle import nn
    from stable_diffusion_chinese.models.transformer import Attention

    counts = {"linear": 0.0, "self_attention": 0.0}

    def conv_hook(layer, args, out):
        kh, kw = layer.weight.shape[2:]
        counts["linear"] += 2.0 * out.size * layer.weight.shape[1] * kh * kw

    def linear_hook(layer, args, out):
        counts["linear"] += 2.0 * out.size * layer.weight.shape[0]

    def attention_hook(layer, args, out):
        x = args[0]
        tokens = x.shape[2] * x.shape[3] if x.ndim == 4 else x.shape[1]
        keys = args[1].shape[1] if len(args) > 1 and args[1] is not None else tokens
        width = layer.to_q.weight.shape[1]
        products = 2 * 2.0 * x.shape[0] * tokens * keys * width  # q k^T and p v
        counts["self_attention" if keys == tokens and len(args) == 1 else "linear"] += products

    hooks = []
    for layer in network.sublayers():
        if isinstance(layer, nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear_hook))
        elif isinstance(layer, Attention):
            hooks.append(layer.register_forward_post_hook(attention_hook))
    try:
        with paddle.no_grad():
            run_small()
    finally:
        for hook in hooks:
            hook.remove()
    return {"flops": counts["linear"] * area + counts["self_attention"] * area ** 2,
            "self_attention_share": counts["self_attention"] * area ** 2 /
                                    (counts["linear"] * area + counts["self_attention"] * area ** 2)}


def worker(framework: str, workdir: Path, threads: int) -> None:
    side = TorchSide(workdir, threads) if framework == "torch" else PaddleSide(workdir, threads, framework == "inference")
    inputs_cache: dict[str, dict] = {}

    def reply(**values):
        print(MARK + json.dumps(values), flush=True)

    reply(ready=True, rss_mb=rss_mb())
    for line in sys.stdin:
        request = json.loads(line)
        command, case = request["cmd"], request.get("case")
        if command == "quit":
            reply(rss_mb=rss_mb())
            return
        if command == "load":
            start = time.perf_counter()
            side.load(request["group"])
            reply(seconds=time.perf_counter() - start, rss_mb=rss_mb())
        elif command == "run":
            x = inputs_cache.setdefault(case, case_inputs(case))
            start = time.perf_counter()
            out = side.run(case, x, request.get("steps", 20))
            seconds = time.perf_counter() - start
            if request.get("save"):
                np.save(request["save"], out)
            reply(seconds=seconds, rss_mb=rss_mb())
        elif command == "flops":
            reply(**side.flops(case))
        elif command == "rss":
            reply(rss_mb=rss_mb())
        elif command == "profile":
            side.profile(case, inputs_cache.setdefault(case, case_inputs(case)))
            reply(done=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# ------------------------------------------------------------------------------------------- the parent


class Worker:
    def __init__(self, framework: str, workdir: Path, threads: int, log):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        self.framework, self.log = framework, log
        # cwd: Paddle's profiler writes profile.log into the working directory
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", framework, "--workdir", str(workdir), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=workdir)
        self.other_output: list[str] = []
        self.read()

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            self.other_output.append(line)
        raise RuntimeError(f"{self.framework} worker died (exit {self.process.wait()}); see the log")

    def close(self) -> float:
        rss = self.ask(cmd="quit")["rss_mb"]
        self.process.wait(timeout=120)
        return rss


def compare(case: str, expected: np.ndarray, got: np.ndarray) -> str:
    diff = float(np.abs(got - expected).max())
    text = f"max|diff| {diff:.2e} (rel {diff / float(np.abs(expected).max()):.1e})"
    if case.startswith("vae") or case == "gen20":
        to_uint8 = (lambda a: np.round(np.clip(a / 2 + 0.5, 0, 1) * 255)) if case.startswith("vae") else \
                   (lambda a: np.round(np.clip(a, 0, 1) * 255))
        pixels = np.abs(to_uint8(got) - to_uint8(expected))
        text += f", pixels within 1/255: {100 * (pixels <= 1).mean():.2f} %, max {int(pixels.max())}/255"
    return text


def run_group(group: str, cases: list[str], args, workdir: Path, log, report: list[str]) -> None:
    workers = {f: Worker(f, workdir, args.threads, log) for f in FRAMEWORKS}
    rss: dict[str, float] = {}
    try:
        load = {f: w.ask(cmd="load", group=group)["seconds"] for f, w in workers.items()}
        report.append(f"\n## {group}: load " + ", ".join(f"{LABELS[f]} {load[f]:.1f} s" for f in FRAMEWORKS))
        for case in cases:
            outputs = {}
            for f, w in workers.items():  # warm-up, untimed; keeps each framework's output for comparison
                path = workdir / f"out_{case}_{f}.npy"
                w.ask(cmd="run", case=case, save=str(path))
                outputs[f] = np.load(path)
            reps = args.reps or (2 if args.quick else FULL_REPS.get(case, 5))
            times = {f: [] for f in FRAMEWORKS}
            for rep in range(reps):
                order = FRAMEWORKS[rep % 3:] + FRAMEWORKS[:rep % 3]  # rotate who goes first
                for f in order:
                    times[f].append(workers[f].ask(cmd="run", case=case)["seconds"])
            flops = workers["paddle"].ask(cmd="flops", case=case)["flops"] if case.startswith(("unet", "vae")) else None
            report.extend(case_report(case, times, outputs, flops))
        # the group's peaks, read before a profiling predictor adds its own memory
        rss = {f: w.ask(cmd="rss")["rss_mb"] for f, w in workers.items()}
        for case in cases:
            if args.profile and case in ("unet64", "vae512"):
                w = workers["inference"]
                w.other_output.clear()
                w.ask(cmd="profile", case=case)
                report.extend(profile_table(w.other_output, case))
    finally:
        for f, w in workers.items():
            try:
                closing = w.close()
                if not args.profile:
                    rss[f] = closing
            except Exception:  # a dead worker: its error is in the log
                w.process.kill()
        if rss:
            report.append("peak RSS of each framework's worker (weights + activations + framework): " + ", ".join(
                f"{LABELS[f]} {rss[f] / 1024:.2f} GB" for f in FRAMEWORKS if f in rss))


def run_sequential_group(group: str, cases: list[str], args, workdir: Path, log, report: list[str]) -> None:
    """``SEQUENTIAL`` cases: one framework at a time (three such workers at once could exhaust memory),
    one timed run each, after the case's ``WARMUP`` run if it has one, else cold."""
    times = {case: {} for case in cases}
    outputs = {case: {} for case in cases}
    rss, load, flops = {}, {}, {}
    for f in FRAMEWORKS:
        w = Worker(f, workdir, args.threads, log)
        try:
            load[f] = w.ask(cmd="load", group=group)["seconds"]
            for case in cases:
                if case in WARMUP:
                    w.ask(cmd="run", case=case, **WARMUP[case])
                path = workdir / f"out_{case}_{f}.npy"
                times[case][f] = [w.ask(cmd="run", case=case, save=str(path))["seconds"]]
                outputs[case][f] = np.load(path)
                if f == "paddle" and case.startswith(("unet", "vae")):
                    flops[case] = w.ask(cmd="flops", case=case)["flops"]
        finally:
            rss[f] = w.close()
    report.append(f"\n## {group} (frameworks one after another): load "
                  + ", ".join(f"{LABELS[f]} {load[f]:.1f} s" for f in FRAMEWORKS))
    for case in cases:
        report.extend(case_report(case, times[case], outputs[case], flops.get(case)))
    report.append("peak RSS of each framework's worker (weights + activations + framework): " + ", ".join(
        f"{LABELS[f]} {rss[f] / 1024:.2f} GB" for f in FRAMEWORKS))


def case_report(case: str, times: dict, outputs: dict, flops: float | None) -> list[str]:
    medians = {f: float(np.median(t)) for f, t in times.items()}
    runs = (f"{len(times['torch'])} reps, median seconds" if case not in SEQUENTIAL else
            f"one run after a {WARMUP[case]['steps']}-step warm-up, seconds" if case in WARMUP else "one cold run, seconds")
    lines = [f"\n{CASES[case][1]}  ({runs})"]
    for f in FRAMEWORKS:
        line = (f"  {LABELS[f]:<17} {medians[f]:8.2f} s   x{medians[f] / medians['torch']:.2f} vs PyTorch"
                f"   [{', '.join(f'{t:.2f}' for t in times[f])}]")
        if flops:
            line += f"   {flops / medians[f] / 1e9:6.1f} GFLOP/s"
        lines.append(line)
    for f in ("paddle", "inference"):
        lines.append(f"  {LABELS[f]} vs PyTorch output: {compare(case, outputs['torch'], outputs[f])}")
    if flops:
        work = "UNet work" if case.startswith("unet") else "VAE decoder work"
        lines.append(f"  {work}: {flops / 1e9:.0f} GFLOP per run (conv, linear and attention products)")
    return lines


def profile_table(output: list[str], case: str, top: int = 14) -> list[str]:
    rows = [line.rstrip() for line in output if line.startswith(("onednn_op.", "pd_op.", "cpu_op."))]
    rows = [r for r in rows if "infermeta" not in r]
    head = [line.rstrip() for line in output if line.startswith("Event ")][:1]
    return [f"  Paddle Inference per-op profile, {case} (2 runs):"] + ["    " + r for r in head + rows[:top]]


def header(args) -> list[str]:
    from stable_diffusion_chinese.runtime.cpu import cpu_mhz, has_avx512f, model_name, usable_cores
    import importlib.metadata as md
    mhz = cpu_mhz()
    peak = args.threads * mhz * 1e6 * FLOP_PER_CYCLE / 1e9 if mhz else float("nan")
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    versions = ", ".join(f"{p} {md.version(p)}" for p in ("torch", "paddlepaddle", "diffusers", "transformers"))
    return [
        f"# benchmark {time.strftime('%Y-%m-%d %H:%M')}  {'--quick' if args.quick else 'full'} run",
        f"CPU: {model_name()}, {usable_cores()} usable cores, {mhz or '?'} MHz, AVX-512F: {has_avx512f()}",
        f"threads per framework: {args.threads}; fp32 peak at {args.threads} cores: {peak:.0f} GFLOP/s "
        f"({args.threads} x {mhz} MHz x {FLOP_PER_CYCLE} FLOP/cycle)",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{versions}; Python {platform.python_version()}",
        f"allocator: {malloc or 'no MALLOC_* variables set: glibc defaults'} (the same for every worker)",
        "Paddle Inference: oneDNN on, IR optimisation on, fused self-attention "
        f"{'on' if has_avx512f() else 'off (no AVX-512F)'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, no 20-step generation")
    parser.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, help="repetitions per case (default 2 with --quick, else 3-5)")
    parser.add_argument("--workdir", help="keep weights and exports here between runs (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="Paddle Inference per-op times for unet64/vae512")
    parser.add_argument("--log", default=None, help="workers' stderr (default: WORKDIR/workers.log)")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--groups", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, Path(args.workdir), args.threads)
    if args.build or args.export:
        groups = set(args.groups.split(","))
        return build_models(Path(args.workdir), groups) if args.build else export_models(Path(args.workdir), groups)

    cases = args.only.split(",") if args.only else [c for c in CASES
                                                     if c not in LARGE and not (args.quick and c == "gen20")]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    temporary = None if args.workdir else tempfile.mkdtemp(prefix="sd_benchmark_")
    workdir = Path(args.workdir or temporary)
    workdir.mkdir(parents=True, exist_ok=True)
    groups = sorted({CASES[c][0] for c in cases}, key=list(GROUPS).index)
    report = header(args)
    print("\n".join(report), flush=True)
    try:
        with open(args.log or workdir / "workers.log", "a") as log:
            components = ",".join(sorted({GROUPS[g][0] for g in groups}))
            for step in ("--build", "--export"):  # own processes: the parent stays small
                subprocess.run([sys.executable, __file__, step, "--workdir", str(workdir), "--groups", components],
                               check=True, stdout=log, stderr=log, cwd=ROOT)
            for group in groups:
                start = len(report)
                group_cases = [c for c in cases if CASES[c][0] == group]
                runner = run_sequential_group if all(c in SEQUENTIAL for c in group_cases) else run_group
                runner(group, group_cases, args, workdir, log, report)
                print("\n".join(report[start:]), flush=True)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
