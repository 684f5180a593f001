"""Job files: many generations from one JSON or YAML file, every job checked before the first runs.

    # jobs.yaml                                    # or jobs.json with the same structure
    defaults: {style: 水墨, steps: 20, output_dir: out}
    jobs:
      - {text: 江上烟雨，小船, seed: 0}
      - {text: [远山, 松树], num_images: 2, style: 古风}

A plain list of jobs works too. Keys are generate()'s arguments. Relative ``output_dir``, ``image``, ``mask``
and ``model`` paths are relative to the job file's folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from stable_diffusion_chinese.service.arguments import GENERATE_ARGUMENTS as GENERATE_KEYS

DEFAULT_OUTPUT_DIR = "stable_diffusion_chinese_output"


class JobFileError(ValueError):
    """The job file cannot be read, or a job in it is wrong; the message names the job."""


def load_jobs(path: str | Path) -> list[dict[str, Any]]:
    """The jobs in ``path``, defaults applied and paths made absolute (not yet checked)."""
    path = Path(path)
    data = _read(path)
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"defaults", "jobs"})
        if unknown or "jobs" not in data:
            raise JobFileError(f"{path}: expected a list of jobs, or an object with 'jobs' (and optional "
                               f"'defaults'); found keys {', '.join(map(str, data)) or 'none'}")
        defaults, data = data.get("defaults") or {}, data["jobs"]
    if not isinstance(data, list) or not data or not isinstance(defaults, dict):
        raise JobFileError(f"{path}: 'jobs' must be a non-empty list of objects and 'defaults' an object")
    jobs = []
    for number, job in enumerate(data, 1):
        if not isinstance(job, dict):
            raise JobFileError(f"{path}: job {number} must be an object such as {{\"text\": \"...\"}}, got {job!r}")
        merged = {"output_dir": DEFAULT_OUTPUT_DIR, **defaults, **job}
        unknown = sorted(set(merged) - set(GENERATE_KEYS))
        if unknown:
            raise JobFileError(f"{path}: job {number} has unknown key(s) {', '.join(unknown)}; "
                               f"known: {', '.join(GENERATE_KEYS)}")
        jobs.append(_absolute_paths(merged, path.parent))
    return jobs


def check_jobs(jobs: list[dict[str, Any]], limits=None, local: bool = True) -> None:
    """Raise ``JobFileError`` naming the first bad job; checks the model only when generating locally."""
    from stable_diffusion_chinese.service import Limits, Settings, check_request, choose_model
    from stable_diffusion_chinese.service.models import check_embedded_weights, model_kind

    settings = Settings.from_environ()
    for number, job in enumerate(jobs, 1):
        arguments = {k: v for k, v in job.items() if k != "model"}
        try:
            check_request(**arguments, limits=limits or Limits())
            if local:
                choice = choose_model(job.get("model"), settings)
                if choice.is_embedded:
                    check_embedded_weights(choice.path)
                else:
                    model_kind(choice.path)
            elif job.get("model") is not None:
                raise ValueError("'model' cannot be set when a server generates: the server chooses its model")
        except (ValueError, TypeError, OSError) as error:
            raise JobFileError(f"job {number}: {error}") from None


def run_jobs(jobs: list[dict[str, Any]], generate: Callable[..., list]) -> list[list[str]]:
    """Run every job with ``generate`` (local or a Client's); the written paths, per job."""
    return [[image.info["path"] for image in generate(**job)] for job in jobs]


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise JobFileError(f"cannot read job file {path}: {error.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise JobFileError("YAML job files need PyYAML (pip install pyyaml); or write the jobs as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise JobFileError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JobFileError(f"{path} is not valid JSON ({error})") from None


def _absolute_paths(job: dict[str, Any], base: Path) -> dict[str, Any]:
    job = dict(job)
    for key in ("output_dir", "image", "mask"):
        if isinstance(job.get(key), str) and job[key]:
            job[key] = str(base / Path(job[key]).expanduser())
    model = job.get("model")
    if isinstance(model, str) and (base / model).exists():  # else a downloaded model's name, "embedded", ...
        job["model"] = str(base / model)
    return job
