"""Helpers for the Module, serving and SDK tests (real PaddleHub, no mocks).

- ``write_tiny_model`` (from ``tiny_pipeline``): a random Paddle pipeline folder for 64x64 images;
- ``isolated_env``: a throw-away PaddleHub home and HOME with PaddleHub's phone-home pointed at a closed
  loopback port, the Module installed as a link (``sd-chinese install-hub-module``);
- ``hub_command``: the ``hub`` entry point next to the running Python (``.venv/bin/hub`` in CI);
- ``served_module``: ``hub serving start`` on a free loopback port in its own process group, always stopped.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from tiny_pipeline import EMBEDDED, write_tiny_model  # noqa: F401  (re-exported for the Module tests)

MODULE = "stable_diffusion_chinese"
# steps/size every test uses: cheap, and enough to exercise guidance, the scheduler and the VAE
FAST = dict(steps=2, width=64, height=64)


def write_diffusers_copy(paddle_folder: Path, out: Path) -> Path:
    """The same weights as a diffusers folder (torch layout, ``*.safetensors``), as diffusers would save them."""
    from safetensors.numpy import save_file

    from stable_diffusion_chinese.pipelines.loading import load_components
    from stable_diffusion_chinese.weights.state_dict import export_from

    parts = load_components(paddle_folder)
    files = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
             "text_encoder": "model.safetensors"}
    for name, file_name in files.items():
        (out / name).mkdir(parents=True)
        shutil.copy(paddle_folder / name / "config.json", out / name / "config.json")
        save_file(export_from(parts[name]), str(out / name / file_name))
    for name in ("tokenizer", "scheduler"):
        shutil.copytree(paddle_folder / name, out / name)
    shutil.copy(paddle_folder / "model_index.json", out / "model_index.json")
    return out


def hub_command() -> str:
    return str(Path(sys.executable).parent / "hub")


def isolated_env(root: Path, model: Path | None) -> dict[str, str]:
    """Environment for a PaddleHub subprocess that touches nothing outside ``root``."""
    from stable_diffusion_chinese.service.hub_home import install_hub_module

    hub_home, home = root / "hub_home", root / "home"
    (hub_home / "conf").mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    # PaddleHub sends a search request on every hub.Module / hub run / hub serving; port 9 on loopback is closed
    (hub_home / "conf" / "config.yaml").write_text("server: http://127.0.0.1:9/paddlehub\n", encoding="utf-8")
    install_hub_module(hub_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SD_CHINESE_")}
    env.update(HUB_HOME=str(hub_home), HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if model is not None:
        env["SD_CHINESE_MODEL"] = str(model)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_module(env: dict[str, str], cwd: Path, *start_args: str, timeout: float = 180.0) -> Iterator[str]:
    """``hub serving start`` (``-m stable_diffusion_chinese -p PORT`` unless ``start_args`` say otherwise);
    yields ``http://127.0.0.1:PORT``; the whole process group is killed afterwards."""
    port = None
    if not start_args:
        port = free_port()
        start_args = ("-m", MODULE, "-p", str(port))
    else:
        port = int(json.loads(Path(start_args[start_args.index("--config") + 1]).read_text())["port"])
    log_path = cwd / f"serving-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([hub_command(), "serving", "start", *start_args], cwd=cwd, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # setsid
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, process, log_path, timeout)
        yield url
    finally:
        _stop(process)


def _wait_until_up(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hub serving exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"hub serving did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def post(url: str, body, content_type: str = "application/json") -> tuple[int, object]:
    """POST to ``/predict/stable_diffusion_chinese``: (HTTP status, parsed JSON or the raw text)."""
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(f"{url}/predict/{MODULE}", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, text = response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def error_lines(stderr: str) -> list[str]:
    """The lines of a command's stderr that report an error (Paddle/setuptools import warnings excluded)."""
    return [line for line in stderr.splitlines() if "error:" in line.lower()]
