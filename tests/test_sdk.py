"""The low-code SDK ``sdc_sdk``: ``generate``, ``Client(url).generate`` against a real ``hub serving``, the
``sd-chinese`` command line (generate, styles, schedulers, run job files, convert, install-hub-module)."""
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sdc_sdk
from hub_fixtures import FAST, MODULE, error_lines, isolated_env, served_module, write_diffusers_copy, \
    write_tiny_model
from sdc_sdk.cli import main
from stable_diffusion_chinese.pipelines.metadata import read_png_params
from stable_diffusion_chinese.service import TextToImage, style_names


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("sdk")


@pytest.fixture(scope="module")
def tiny_model(workspace):
    return write_tiny_model(workspace / "tiny")


@pytest.fixture(scope="module")
def server(workspace, tiny_model):
    with served_module(isolated_env(workspace / "iso", tiny_model), workspace) as url:
        yield url


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Each test's own SD_CHINESE_HOME (config, downloads, cache): nothing read from or written to ~."""
    monkeypatch.setenv("SD_CHINESE_HOME", str(tmp_path / "sd_home"))
    monkeypatch.delenv("SD_CHINESE_MODEL", raising=False)


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_every_generate_has_the_same_signature():
    """The SDK (local and Client), the Module and the engine take generate()'s arguments in one order with one
    set of defaults, and job files and serving requests accept those names (GENERATE_ARGUMENTS)."""
    from stable_diffusion_chinese.module import StableDiffusionChinese
    from stable_diffusion_chinese.service.arguments import GENERATE_ARGUMENTS
    from stable_diffusion_chinese.service.serving import REQUEST_KEYS, SERVER_ONLY
    from sdc_sdk.jobs import GENERATE_KEYS

    def arguments(function):
        return [(p.name, p.default) for p in inspect.signature(function).parameters.values()
                if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    local = arguments(sdc_sdk.generate)
    assert [name for name, _ in local] == list(GENERATE_ARGUMENTS)
    for other in (sdc_sdk.Client.generate, StableDiffusionChinese.generate, TextToImage.generate):
        assert arguments(other) == local, other
    assert list(GENERATE_KEYS) == list(GENERATE_ARGUMENTS)
    assert set(REQUEST_KEYS) | set(SERVER_ONLY) == set(GENERATE_ARGUMENTS)


def test_generate_one_liner(tiny_model, tmp_path):
    images = sdc_sdk.generate("江上烟雨", style="水墨", seed=0, model=tiny_model, output_dir=tmp_path, **FAST)
    assert len(images) == 1 and images[0].size == (64, 64)
    path = Path(images[0].info["path"])
    assert path == tmp_path / "00000-0.png"
    assert read_png_params(path).style == "水墨" and "Seed: 0" in images[0].info["parameters"]
    assert list(sdc_sdk.styles()) == style_names() and "euler_a" in sdc_sdk.schedulers()


def test_client_gives_what_local_generation_gives(server, tiny_model, tmp_path):
    client = sdc_sdk.Client(server)
    kwargs = dict(text=["一只猫", "a 小狗"], style="古风", negative_text="模糊", seed=11, num_images=1,
                  guidance_rescale=0.5, **FAST)
    remote = client.generate(**kwargs, output_dir=tmp_path / "remote")
    local = sdc_sdk.generate(**kwargs, output_dir=tmp_path / "local", model=tiny_model)
    for r, l in zip(remote, local):
        assert np.array_equal(pixels(r), pixels(l))
        assert r.info["sd_chinese_params"] == l.info["sd_chinese_params"]
        assert Path(r.info["path"]).name == Path(l.info["path"]).name
    assert [p.name for p in sorted((tmp_path / "remote").iterdir())] == ["00000-11.png", "00001-12.png"]
    assert read_png_params(tmp_path / "remote" / "00001-12.png").prompt.startswith("a 小狗，古风")
    assert client.styles() == sdc_sdk.styles()
    assert client.schedulers() == sdc_sdk.schedulers()
    # the full predict address works as well as the server's base address
    assert len(sdc_sdk.Client(f"{server}/predict/{MODULE}").generate("猫", seed=0, **FAST)) == 1


def test_client_sends_start_images_and_masks(server, tiny_model, tmp_path):
    """A Client reads ``image`` / ``mask`` (paths here) itself and sends PNGs: what local generation gives."""
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(tmp_path / "start.jpg", quality=95)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    kwargs = dict(text="一只猫", seed=4, steps=4, image=tmp_path / "start.jpg", mask=str(tmp_path / "mask.png"))
    remote = sdc_sdk.Client(server).generate(**kwargs)
    local = sdc_sdk.generate(**kwargs, model=tiny_model)
    assert np.array_equal(pixels(remote[0]), pixels(local[0]))
    assert remote[0].info["sd_chinese_params"] == local[0].info["sd_chinese_params"]
    with pytest.raises(ValueError, match="image: cannot read image"):
        sdc_sdk.Client(server).generate("猫", image=tmp_path / "missing.png")


def test_client_errors(server, tmp_path):
    client = sdc_sdk.Client(server)
    with pytest.raises(sdc_sdk.ServingError, match=r"unknown style '莫奈'; valid styles: 古风.* \(server status 101\)"):
        client.generate("猫", style="莫奈", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="Client.generate cannot choose the model: the server does"):
        client.generate("猫", model="/somewhere")
    with pytest.raises(ValueError, match="url must start with http:// or https://"):
        sdc_sdk.Client("127.0.0.1:8866")
    with pytest.raises(ConnectionError, match=r"cannot reach http://127.0.0.1:9/predict/stable_diffusion_chinese .*"
                                              r"is `hub serving start -m stable_diffusion_chinese` running there"):
        sdc_sdk.Client("http://127.0.0.1:9").generate("猫")


# ------------------------------------------------------------------------------------------- the CLI

def test_cli_generate_styles_schedulers(tiny_model, server, tmp_path, capsys):
    assert main(["generate", "--text", "猫", "--seed", "0", "--steps", "2", "--model", str(tiny_model),
                 "--output_dir", str(tmp_path / "local")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "local" / "00000-0.png")
    assert main(["generate", "--text", "猫", "--text", "狗", "--seed", "0", "--steps", "2", "--server", server,
                 "--output_dir", str(tmp_path / "remote")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "remote" / n) for n in ("00000-0.png", "00001-1.png")]
    assert main(["styles", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == style_names()
    assert main(["styles"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("水墨\t+ 水墨画")
    assert main(["schedulers"]) == 0
    assert "dpm++2m_karras" in capsys.readouterr().out.split()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--text", "猫", "--server", "http://127.0.0.1:9", "--model", "x"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == ("sd-chinese generate: error: --model cannot be used with --server: "
                                               "the server chooses its model")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--style", "水墨"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == ("sd-chinese generate: error: the following arguments are required: "
                                               "--text (see --help)")


def test_cli_as_a_real_process(tmp_path):
    env = {**os.environ, "SD_CHINESE_HOME": str(tmp_path / "sd_home"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "sdc_sdk", "generate", "--text", "猫", "--width", "100"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == ""
    assert error_lines(result.stderr) == ["sd-chinese generate: error: width=100 is not a multiple of 8 (try 96)"]


JOBS_YAML = """\
defaults: {style: 水墨, steps: 2, width: 64, height: 64, output_dir: out}
jobs:
  - {text: 江上烟雨，一叶小舟, seed: 0}
  - {text: [远山, 松树], num_images: 2, seed: 5, style: 古风, model: tiny, guidance_rescale: 0.7}
  - {text: 水墨远山, seed: 9, image: start.png, strength: 0.6, model: tiny}
"""


def test_job_file(tiny_model, server, tmp_path, capsys, monkeypatch):
    job_dir = tmp_path / "jobs"
    job_dir.mkdir()
    (job_dir / "tiny").symlink_to(tiny_model)  # relative model paths are relative to the job file
    (job_dir / "jobs.yaml").write_text(JOBS_YAML, encoding="utf-8")
    from PIL import Image
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(job_dir / "start.png")   # relative to the job file
    monkeypatch.setenv("SD_CHINESE_MODEL", str(tiny_model))  # job 1 names no model
    assert main(["run", str(job_dir / "jobs.yaml")]) == 0
    out = job_dir / "out"
    assert capsys.readouterr().out.splitlines() == [
        f"job 1: {out / '00000-0.png'}", f"job 2: {out / '00001-5.png'}", f"job 2: {out / '00002-6.png'}",
        f"job 2: {out / '00003-7.png'}", f"job 2: {out / '00004-8.png'}", f"job 3: {out / '00005-9.png'}"]
    assert read_png_params(out / "00005-9.png").strength == 0.6
    assert read_png_params(out / "00001-5.png").style == "古风" and read_png_params(out / "00000-0.png").style == "水墨"
    assert read_png_params(out / "00001-5.png").extra == {"Guidance rescale": "0.7"}
    assert not read_png_params(out / "00000-0.png").extra
    # the same jobs on the server (which chooses the model, so job 2 must not name one)
    (job_dir / "remote.json").write_text(json.dumps([{"text": "江上烟雨", "seed": 0, "output_dir": "remote", **FAST}]),
                                         encoding="utf-8")
    assert main(["run", str(job_dir / "remote.json"), "--server", server]) == 0
    assert capsys.readouterr().out.strip() == f"job 1: {job_dir / 'remote' / '00000-0.png'}"


@pytest.mark.parametrize("content, message", [
    ('[{"text": "猫"}, {"text": "狗", "style": "莫奈"}]', "error: job 2: unknown style '莫奈'"),
    ('[{"text": "猫", "stpes": 3}]', "job 1 has unknown key(s) stpes; known: text, style"),
    ('{"job": []}', "expected a list of jobs, or an object with 'jobs'"),
    ('[{"text": "猫", "model": "/nonexistent/model"}]', "job 1: model '/nonexistent/model' (from the model= argument) "
                                                       "not found"),
    ("[oops", "is not valid JSON"),
])
def test_bad_job_file_runs_nothing(tiny_model, tmp_path, capsys, monkeypatch, content, message):
    monkeypatch.setenv("SD_CHINESE_MODEL", str(tiny_model))
    (tmp_path / "jobs.json").write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "jobs.json")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sd-chinese run: error: ") and message in err[0]
    assert not (tmp_path / "stable_diffusion_chinese_output").exists()  # job 1 did not run either


def test_cli_convert_is_the_engine_command(tiny_model, tmp_path, capsys):
    source = write_diffusers_copy(tiny_model, tmp_path / "diffusers")
    assert main(["convert", str(source), str(tmp_path / "paddle")]) == 0
    assert (tmp_path / "paddle" / "unet" / "model.pdparams").is_file()
    images = sdc_sdk.generate("猫", seed=0, model=tmp_path / "paddle", **FAST)
    reference = sdc_sdk.generate("猫", seed=0, model=tiny_model, **FAST)
    assert np.array_equal(pixels(images[0]), pixels(reference[0]))


def test_install_hub_module(tmp_path, capsys):
    hub_home = tmp_path / "hub"
    package = Path(sys.modules["stable_diffusion_chinese"].__file__).resolve().parent
    entry = hub_home / "modules" / MODULE
    assert main(["install-hub-module", "--hub-home", str(hub_home)]) == 0
    assert capsys.readouterr().out.strip() == str(entry)
    assert entry.is_symlink() and entry.resolve() == package and (entry / "module.py").is_file()
    assert main(["install-hub-module", "--hub-home", str(hub_home)]) == 0  # again: nothing changes
    assert entry.resolve() == package
    assert main(["install-hub-module", "--hub-home", str(hub_home), "--remove"]) == 0
    assert not entry.exists() and not entry.is_symlink() and (package / "module.py").is_file()
    entry.mkdir(parents=True)  # a copy left by `hub install <folder>`
    (entry / "module.py").write_text("# old copy")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["install-hub-module", "--hub-home", str(hub_home)])
    assert "is a copy, not a link to the installed package" in capsys.readouterr().err
    assert main(["install-hub-module", "--hub-home", str(hub_home), "--force"]) == 0
    assert entry.is_symlink() and entry.resolve() == package


def test_install_hub_module_into_a_file_is_a_clear_error(tmp_path, capsys):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit):
        main(["install-hub-module", "--hub-home", str(a_file)])
    err = capsys.readouterr().err
    assert f"cannot create the hub module folder {a_file / 'modules'}" in err and "must be a folder" in err
