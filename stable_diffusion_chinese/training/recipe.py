"""The embedded model's whole recipe from random weights (seed 0), as one command:

    OMP_NUM_THREADS=1 python scripts/train_embedded.py recipe --run-dir /work/recipe

``RECIPE`` is the table of stages; ``run_recipe`` runs them in order as child processes of the training
script, two side by side where the order allows, each on one thread. Why one thread: Paddle's CPU kernels
split their reductions by thread, so the thread count is part of the result; and on the 2-core machine two
1-thread jobs side by side do more than one 2-thread job (the VAE stage: 1.0 s/step at 1 thread, 1.7 at 2).

Every stage resumes from its own checkpoints, so the command run again after a stop (the end of a session,
a kill) goes on where it stopped and gives the same weights. A finished stage leaves ``recipe/<stage>.json``
and is skipped; ``recipe/runs.jsonl`` holds each invocation's wall-clock time (that of one killed outright
comes from its last heartbeat, at most a poll short), which adds up to the time
the recipe took. The result is ``<run-dir>/pipeline``, the folder to copy into ``assets/embedded``.

The shape of the recipe is the lineage of the weights shipped up to 2026-12-08 (docs/embedded_lineage.md)
without its detours: the VAE, its decoder fine-tuned with the edge loss, one diffusion run with every loss
of today's defaults, then three short branches off its last checkpoint that end with the learning rate
decayed (runs 12d, 15/18 and 22's options: object weight 1, object weight 3, object weight 3 with more
watercolour) and the uniform soup of the three (Wortsman et al. 2022; the shipped weights are such a soup).
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .checkpoint import checkpoint_path, latest_checkpoint
from .soup import average_pipelines

RUN = "{run}"                  # stands for the recipe's run folder in a stage's arguments
TRUNK_STEPS = 10_000           # the diffusion run the branches leave from (constant learning rate 5e-4)
BRANCH_STEPS = 1_500           # each branch: the rate decays linearly to 5e-5 over these steps
THREADS = "1"
JOBS = 2


class StageFailed(Exception):
    """A stage's child process ended with an error (its traceback is in the stage's log)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    args: tuple[str, ...] = ()        # scripts/train_embedded.py's arguments, without --run-dir
    after: tuple[str, ...] = ()       # the stages it needs finished
    folder: str = ""                  # its --run-dir, under the run folder ("": the run folder itself)
    branch_of: str = ""               # a diffusion stage whose last checkpoint (weights, optimizer, EMA, step)
                                      # this one continues; the run folder's vae_model comes along
    soup_of: tuple[str, ...] = ()     # instead of args: average these pipeline folders into ``folder``


def _branch(name: str, seed: int, *options: str) -> Stage:
    steps = TRUNK_STEPS + BRANCH_STEPS
    return Stage(name, ("diffusion", "--steps", str(steps), "--decay-steps", str(BRANCH_STEPS), "--seed", str(seed),
                        *options), after=("trunk",), folder=name, branch_of="trunk")


def _export(branch: str) -> Stage:
    return Stage(f"export_{branch}", ("export", "--vae", f"{RUN}/vae_decoder_model", "--out", f"{RUN}/{branch}/pipeline"),
                 after=(branch, "decoder"), folder=branch)


BRANCHES = ("branch_a", "branch_b", "branch_c")
RECIPE = (
    # the VAE stage's defaults (cosine from 5e-4, batch 8, 64-px crops) for 4000 steps, with the edge loss
    # that the decoder stage found sharpens outlines (docs/embedded_model.md, "Decoder 2")
    Stage("vae", ("vae", "--steps", "4000", "--edge-weight", "1")),
    # the decoder stage's defaults (6e-4 constant, the last 500 steps decayed, edge loss, named backgrounds
    # half the time); 12000 steps, between decoder 2 (9000) and the shipped decoder 3 (15000)
    Stage("decoder", ("vae-decoder", "--steps", "12000"), after=("vae",)),
    Stage("trunk", ("diffusion", "--steps", str(TRUNK_STEPS)), after=("vae",)),
    _branch("branch_a", 0, "--object-weight", "3"),
    _branch("branch_b", 1, "--object-weight", "3", "--style-share", "0.3"),
    _branch("branch_c", 2),
    *(_export(branch) for branch in BRANCHES),
    Stage("soup", soup_of=tuple(f"{branch}/pipeline" for branch in BRANCHES), folder="pipeline",
          after=tuple(f"export_{branch}" for branch in BRANCHES)),
)


def run_recipe(run_dir: str | Path, launcher: list[str], stages: tuple[Stage, ...] = RECIPE, jobs: int = JOBS,
               poll_seconds: float = 5.0) -> Path:
    """Run (or go on with) ``stages`` in ``run_dir``; ``launcher`` is the command that runs the training
    script (``[sys.executable, "scripts/train_embedded.py"]``). Returns the last stage's folder."""
    run_dir = Path(run_dir)
    check_order(stages)
    by_name = {stage.name: stage for stage in stages}
    marks = run_dir / "recipe"
    marks.mkdir(parents=True, exist_ok=True)
    done = {s.name for s in stages if _finished(marks, s, run_dir)}
    lock = _take_lock(marks / "lock")
    _close_unfinished_invocation(marks)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    started = time.time()
    _heartbeat(marks, started)
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)   # so `finally` stops the children too
    try:
        while len(done) < len(stages):
            for stage in stages:
                if stage.name in done or stage.name in running or len(running) >= jobs:
                    continue
                if all(name in done for name in stage.after):
                    if stage.soup_of:                  # seconds of numpy: no child process
                        _soup(run_dir, stage, marks)
                        done.add(stage.name)
                    else:
                        running[stage.name] = (_launch(run_dir, stage, by_name.get(stage.branch_of), launcher), time.time())
            if not running:
                continue                               # check_order: something is ready, or all is done
            finished = [name for name, (child, _) in running.items() if child.poll() is not None]
            for name in finished:
                child, since = running.pop(name)
                stage = by_name[name]
                _record(marks / "times.jsonl", stage=name, seconds=round(time.time() - since, 1),
                        returncode=child.returncode)
                if child.returncode != 0:
                    raise StageFailed(f"recipe stage {name!r} failed (exit {child.returncode}); its output is in "
                                       f"{_log_path(run_dir, name)}")
                _mark(marks, stage, time.time() - since)
                done.add(name)
            if not finished:
                time.sleep(poll_seconds)
            _heartbeat(marks, started)
    finally:
        for child, _ in running.values():          # a stopped recipe stops its stages; they resume next time
            child.terminate()
        for child, _ in running.values():
            child.wait()
        _record(marks / "runs.jsonl", started=_iso(started), seconds=round(time.time() - started, 1),
                finished=len(done) == len(stages))
        (marks / HEARTBEAT).unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)
        lock.unlink(missing_ok=True)
    return run_dir / (stages[-1].folder or "")


HEARTBEAT = "running.json"     # an invocation's time so far, rewritten every poll: its time survives a SIGKILL


def _heartbeat(marks: Path, started: float) -> None:
    partial = marks / (HEARTBEAT + ".tmp")
    partial.write_text(json.dumps({"started": _iso(started), "seconds": round(time.time() - started, 1)}))
    partial.replace(marks / HEARTBEAT)


def _close_unfinished_invocation(marks: Path) -> None:
    """An invocation killed outright (the end of a session) left its last heartbeat: count that time too."""
    path = marks / HEARTBEAT
    if path.is_file():
        last = json.loads(path.read_text(encoding="utf-8"))
        _record(marks / "runs.jsonl", started=last["started"], seconds=last["seconds"], finished=False, killed=True)
        path.unlink()


def recipe_seconds(run_dir: str | Path) -> float:
    """The wall-clock seconds of every invocation of the recipe in ``run_dir`` so far."""
    path = Path(run_dir) / "recipe" / "runs.jsonl"
    if not path.is_file():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def check_order(stages: tuple[Stage, ...]) -> None:
    """Names unique, every stage after stages listed before it, branches of stages they follow."""
    seen = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"recipe stage {stage.name!r} is listed twice")
        unknown = [name for name in stage.after if name not in seen]
        if unknown:
            raise ValueError(f"recipe stage {stage.name!r} comes after {unknown}, which are not listed before it")
        if stage.branch_of and stage.branch_of not in stage.after:
            raise ValueError(f"recipe stage {stage.name!r} branches off {stage.branch_of!r} but does not come after it")
        if bool(stage.args) == bool(stage.soup_of):
            raise ValueError(f"recipe stage {stage.name!r} needs either training arguments or folders to average")
        seen.add(stage.name)


def command(run_dir: Path, stage: Stage) -> list[str]:
    """The stage's training-script arguments, as run."""
    return [arg.replace(RUN, str(run_dir)) for arg in _description(stage)] + ["--no-progress"]


def _launch(run_dir: Path, stage: Stage, source: Stage | None, launcher: list[str]) -> subprocess.Popen:
    """Start the stage's child process; ``source``: the stage a branch continues."""
    if source is not None:
        _start_branch(run_dir, stage, source)
    log = _log_path(run_dir, stage.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    args = command(run_dir, stage)
    with open(log, "a", encoding="utf-8") as out:      # the child keeps its own copy of the descriptor
        out.write(f"--- {_iso(time.time())} recipe runs: {' '.join(args)}\n")
        out.flush()
        return subprocess.Popen([*launcher, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": THREADS}, preexec_fn=_die_with_parent)


def _start_branch(run_dir: Path, stage: Stage, source: Stage) -> None:
    """Give a branch that has no checkpoint yet its source's last one and the VAE its latents come from."""
    folder = run_dir / stage.folder
    if latest_checkpoint(folder / "diffusion") is not None:
        return                                   # started before: it resumes from its own checkpoints
    steps = int(source.args[source.args.index("--steps") + 1])
    start = checkpoint_path(run_dir / source.folder / "diffusion", steps)
    if not start.is_file():
        raise FileNotFoundError(f"recipe stage {stage.name!r} starts from {start}, which is missing; "
                                f"stage {source.name!r} must end at step {steps}")
    shutil.copytree(run_dir / source.folder / "vae_model", folder / "vae_model", dirs_exist_ok=True)
    (folder / "diffusion").mkdir(parents=True, exist_ok=True)
    partial = folder / "diffusion" / (start.name + ".tmp")   # the checkpoint pattern skips it until renamed
    shutil.copyfile(start, partial)
    partial.rename(folder / "diffusion" / start.name)


def _soup(run_dir: Path, stage: Stage, marks: Path) -> None:
    since = time.time()
    average_pipelines([run_dir / source for source in stage.soup_of], run_dir / stage.folder, overwrite=True)
    _mark(marks, stage, time.time() - since)


def _finished(marks: Path, stage: Stage, run_dir: Path) -> bool:
    """Whether ``stage`` finished in an earlier invocation, with the arguments the table gives it now."""
    path = marks / f"{stage.name}.json"
    if not path.is_file():
        return False
    recorded = json.loads(path.read_text(encoding="utf-8"))
    now = _description(stage)
    if recorded["did"] != now:
        raise ValueError(f"recipe stage {stage.name!r} finished in {run_dir} as {recorded['did']}, but the recipe "
                         f"now says {now}; use a new run folder for a changed recipe")
    return True


def _mark(marks: Path, stage: Stage, seconds: float) -> None:
    path = marks / f"{stage.name}.json"
    path.write_text(json.dumps({"did": _description(stage), "seconds": round(seconds, 1),
                                "finished": _iso(time.time())}, ensure_ascii=False), encoding="utf-8")


def _description(stage: Stage) -> list[str]:
    """What a finished stage did, with the run folder as ``{run}`` so that the folder may move."""
    if stage.soup_of:
        return ["soup", *stage.soup_of, "->", stage.folder]
    return [*stage.args, "--run-dir", f"{RUN}/{stage.folder}".rstrip("/")]


def _take_lock(path: Path) -> Path:
    if path.is_file():
        pid = int(path.read_text() or 0)
        if pid and _alive(pid):
            raise ValueError(f"another recipe (pid {pid}) is running in {path.parent.parent}; if no recipe runs "
                             f"there (the pid was reused after a restart), delete {path}")
    path.write_text(str(os.getpid()))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the child, before it starts: Linux sends it SIGTERM when the recipe dies, even of SIGKILL, so no stage
    goes on training unwatched while a recipe run again starts a second one on the same checkpoints."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):                                # not Linux: the lock and SIGTERM still hold
        pass


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def _log_path(run_dir: Path, name: str) -> Path:
    return run_dir / "logs" / f"{name}.log"


def _record(path: Path, **entry) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
