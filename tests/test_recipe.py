"""The one-command recipe (training/recipe.py): its table, the order it runs stages in, resuming, and the
real table run end to end with a few steps per stage."""
import dataclasses
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import paddle
import pytest

from stable_diffusion_chinese.training import recipe
from stable_diffusion_chinese.training.recipe import RECIPE, Stage, StageFailed, check_order, run_recipe

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_embedded.py"


def training_script():
    spec = importlib.util.spec_from_file_location("train_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_stage_of_the_recipe_is_a_valid_command_that_starts_from_random_weights(tmp_path):
    check_order(RECIPE)
    script = training_script()
    parser = script.build_parser()
    for stage in RECIPE:
        if stage.soup_of:
            continue
        args = parser.parse_args(recipe.command(tmp_path, stage))
        script.stage_config(parser, args)                     # option values pass TrainConfig's checks
        assert args.init_from is None and args.model is None, stage   # nothing but the seed to start from
    trunk = next(s for s in RECIPE if s.name == "trunk")
    for branch in (s for s in RECIPE if s.branch_of):
        assert branch.branch_of == "trunk"
        steps = lambda s, flag="--steps": int(s.args[s.args.index(flag) + 1])
        assert steps(branch) - steps(trunk) == steps(branch, "--decay-steps") > 0   # the whole branch decays


def test_check_order_names_a_stage_out_of_order():
    for stages, message in (((Stage("a", ("x",), after=("b",)), Stage("b", ("x",))), "not listed before it"),
                            ((Stage("a", ("x",)), Stage("a", ("y",))), "listed twice"),
                            ((Stage("a", ("x",)), Stage("b", ("x",), branch_of="a")), "does not come after"),
                            ((Stage("a"),), "either training arguments or folders")):
        with pytest.raises(ValueError, match=message):
            check_order(stages)


FAKE = textwrap.dedent("""
    import json, os, sys, time
    tag = sys.argv[sys.argv.index("--tag") + 1]
    record = os.environ["RECIPE_RECORD"]
    def note(event):
        with open(record, "a") as f:
            f.write(json.dumps({"tag": tag, "event": event, "time": time.time(),
                                "threads": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
    note("start")
    time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
    if os.path.exists(os.environ["RECIPE_FAIL"] + tag):
        print("failing on purpose"); sys.exit(3)
    note("end")
""")


def test_recipe_runs_ready_stages_two_at_a_time_and_goes_on_after_a_failure(tmp_path, monkeypatch):
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    record, fail = tmp_path / "record.jsonl", tmp_path / "fail-"
    monkeypatch.setenv("RECIPE_RECORD", str(record))
    monkeypatch.setenv("RECIPE_FAIL", str(fail))
    stage = lambda name, sleep, after=(): Stage(name, ("work", "--tag", name, "--sleep", str(sleep)), after=after)
    stages = (stage("a", 0.1), stage("b", 1.5, ("a",)), stage("c", 0.5, ("a",)), stage("d", 0.1, ("b", "c")))
    run = tmp_path / "run"
    launcher = [sys.executable, str(fake)]

    Path(str(fail) + "c").touch()
    with pytest.raises(StageFailed, match=r"'c' failed \(exit 3\).*logs/c\.log"):
        run_recipe(run, launcher, stages, poll_seconds=0.05)
    assert "failing on purpose" in (run / "logs" / "c.log").read_text()
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["tag"] for e in events if e["event"] == "end"] == ["a"]     # b was stopped with the recipe

    Path(str(fail) + "c").unlink()
    run_recipe(run, launcher, stages, poll_seconds=0.05)
    events = [json.loads(line) for line in record.read_text().splitlines()]
    starts = [e["tag"] for e in events if e["event"] == "start"]
    assert starts.count("a") == 1 and starts.count("b") == 2 and starts[-1] == "d"   # a finished: not redone
    assert {e["threads"] for e in events} == {"1"}
    times = {(e["tag"], e["event"]): e["time"] for e in events}
    assert times["b", "start"] < times["c", "end"] and times["c", "start"] < times["b", "end"]   # side by side
    assert times["d", "start"] > max(times["b", "end"], times["c", "end"])
    runs = [json.loads(line) for line in (run / "recipe" / "runs.jsonl").read_text().splitlines()]
    assert [r["finished"] for r in runs] == [False, True]
    assert recipe.recipe_seconds(run) == pytest.approx(sum(r["seconds"] for r in runs))

    run_recipe(run, launcher, stages, poll_seconds=0.05)                  # all finished: nothing runs
    assert len(record.read_text().splitlines()) == len(events)

    changed = (stage("a", 0.2),) + stages[1:]
    with pytest.raises(ValueError, match="'a' finished .* but the recipe now says"):
        run_recipe(run, launcher, changed, poll_seconds=0.05)
    assert not (run / "recipe" / "lock").exists()                        # a refused folder is not left locked

    (run / "recipe" / "lock").write_text(str(os.getpid()))                # a live process holds the folder
    with pytest.raises(ValueError, match=f"another recipe \\(pid {os.getpid()}\\)"):
        run_recipe(run, launcher, stages, poll_seconds=0.05)


def shrunk(stages):
    """The real recipe with a few steps per stage and small batches: every mechanism, seconds of training."""
    steps = {"vae": "2", "decoder": "2", "trunk": "2"}
    out = []
    for stage in stages:
        args = list(stage.args)
        if "--steps" in args:
            args[args.index("--steps") + 1] = steps.get(stage.name, "3")
            if "--decay-steps" in args:
                args[args.index("--decay-steps") + 1] = "1"
            args += ["--batch-size", "4", "--log-every", "1"]
        out.append(dataclasses.replace(stage, args=tuple(args)))
    return tuple(out)


def test_the_real_recipe_runs_end_to_end_and_its_branches_continue_the_trunk(tmp_path):
    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline

    run = tmp_path / "run"
    out = run_recipe(run, [sys.executable, str(SCRIPT)], shrunk(RECIPE), poll_seconds=0.2)
    assert out == run / "pipeline"
    for branch in recipe.BRANCHES:
        logged = [json.loads(line)["step"] for line in (run / branch / "diffusion" / "loss_log.jsonl").read_text()
                  .splitlines()]
        assert logged == [3]                        # it went on from the trunk's step 2, not from step 0
    soup = paddle.load(str(out / "unet" / "model.pdparams"), return_numpy=True)
    branches = [paddle.load(str(run / b / "pipeline" / "unet" / "model.pdparams"), return_numpy=True)
                for b in recipe.BRANCHES]
    key = "conv_in.weight"
    assert not np.array_equal(branches[0][key], branches[1][key])
    mean = sum(b[key].astype(np.float64) for b in branches) / 3
    np.testing.assert_allclose(soup[key].astype(np.float64), mean, atol=1e-3)
    assert (out / "vae" / "model.pdparams").read_bytes() == (run / "branch_a" / "pipeline" / "vae" /
                                                              "model.pdparams").read_bytes()
    pipe = StableDiffusionPipeline.from_pretrained(out)
    image = pipe("红色的圆形", seed=0, num_inference_steps=2, progress=False).images[0]
    assert image.size == (128, 128)


def test_the_recipe_command_refuses_options_its_table_does_not_have(tmp_path):
    import subprocess

    run = subprocess.run([sys.executable, str(SCRIPT), "recipe", "--run-dir", str(tmp_path), "--steps", "3"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "the recipe's options are its table" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "recipe").exists()


def test_a_killed_recipe_takes_its_stages_with_it_and_its_time_still_counts(tmp_path, monkeypatch):
    import signal
    import subprocess
    import time

    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    record = tmp_path / "record.jsonl"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys
        from stable_diffusion_chinese.training.recipe import Stage, run_recipe
        run_recipe({str(tmp_path / "run")!r}, [sys.executable, {str(fake)!r}],
                   (Stage("slow", ("work", "--tag", "slow", "--sleep", "60")),), poll_seconds=0.05)
    """))
    env = {**os.environ, "RECIPE_RECORD": str(record), "RECIPE_FAIL": str(tmp_path / "fail-")}
    parent = subprocess.Popen([sys.executable, str(driver)], env=env)
    heartbeat = tmp_path / "run" / "recipe" / recipe.HEARTBEAT

    def beating() -> bool:       # the stage runs and the recipe has noted some of its time
        try:
            return record.is_file() and json.loads(heartbeat.read_text())["seconds"] > 0
        except (OSError, ValueError):
            return False

    deadline = time.time() + 120
    while not beating() and time.time() < deadline:
        time.sleep(0.1)
    assert beating(), "the stage never started"
    parent.send_signal(signal.SIGKILL)                   # no chance to clean up
    parent.wait()
    children = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True)
    for _ in range(50):
        if not children.stdout.strip():
            break
        time.sleep(0.1)
        children = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True)
    assert not children.stdout.strip(), "the stage went on after its recipe was killed"

    # run again: the killed invocation's time is counted from its last heartbeat, then the stage runs to its end
    for name in ("RECIPE_RECORD", "RECIPE_FAIL"):
        monkeypatch.setenv(name, env[name])
    run_recipe(tmp_path / "run", [sys.executable, str(fake)], (Stage("slow", ("work", "--tag", "slow", "--sleep",
                                                                              "0.1")),), poll_seconds=0.05)
    runs = [json.loads(line) for line in (tmp_path / "run" / "recipe" / "runs.jsonl").read_text().splitlines()]
    assert [r.get("killed", False) for r in runs] == [True, False] and runs[0]["seconds"] > 0
    assert [r["finished"] for r in runs] == [False, True]
    assert not (tmp_path / "run" / "recipe" / recipe.HEARTBEAT).exists()
