"""Model soups (training/soup.py): the mean of pipeline folders' trained weights, refusals that name the problem."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from stable_diffusion_chinese.training.soup import average_pipelines
from tiny_pipeline import TINY_UNET, write_tiny_model

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "average_pipelines.py"


def two_runs(tmp_path):
    """Two tiny pipelines with different UNets and text encoders but one VAE, as two runs from one start."""
    a, b = write_tiny_model(tmp_path / "a", seed=0), write_tiny_model(tmp_path / "b", seed=1)
    shutil.rmtree(b / "vae")
    shutil.copytree(a / "vae", b / "vae")
    return a, b


def weights(folder, part):
    return paddle.load(str(folder / part / "model.pdparams"), return_numpy=True)


def test_a_soup_holds_the_mean_of_the_trained_weights_and_the_shared_vae(tmp_path):
    a, b = two_runs(tmp_path)
    sizes = average_pipelines([a, b], tmp_path / "soup")
    assert set(sizes) == {"unet", "text_encoder"}
    for part in ("unet", "text_encoder"):
        wa, wb, soup = weights(a, part), weights(b, part), weights(tmp_path / "soup", part)
        assert soup.keys() == wa.keys()
        assert any(not np.array_equal(wa[k], wb[k]) for k in wa)              # the runs really differ
        for key in wa:
            np.testing.assert_allclose(soup[key], (wa[key].astype(np.float64) + wb[key]) / 2, rtol=1e-6, atol=1e-7)
            assert soup[key].dtype == wa[key].dtype
    assert (tmp_path / "soup" / "vae" / "model.pdparams").read_bytes() == (a / "vae" / "model.pdparams").read_bytes()

    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline
    image = StableDiffusionPipeline.from_pretrained(tmp_path / "soup")("红色的圆", num_inference_steps=2, height=64,
                                                                       width=64, seed=0, progress=False).images[0]
    assert image.size == (64, 64)


def test_a_soup_refuses_folders_that_cannot_be_averaged(tmp_path):
    a, b = two_runs(tmp_path)
    with pytest.raises(ValueError, match="at least two"):
        average_pipelines([a], tmp_path / "soup")
    with pytest.raises(ValueError, match="one of the sources"):
        average_pipelines([a, b], a)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stale.txt").write_text("from an earlier soup")
    with pytest.raises(ValueError, match="old exists and is not empty"):
        average_pipelines([a, b], tmp_path / "old")
    other_vae = write_tiny_model(tmp_path / "c", seed=2)                     # its own VAE: other latents
    with pytest.raises(ValueError, match="share their vae"):
        average_pipelines([a, other_vae], tmp_path / "soup")
    wider = tmp_path / "wider"
    shutil.copytree(b, wider)
    from stable_diffusion_chinese.models.unet import UNet2DConditionModel
    UNet2DConditionModel.from_config({**TINY_UNET, "block_out_channels": [32, 32]}).save_pretrained(wider / "unet")
    with pytest.raises(ValueError, match="unet/config.json differs"):
        average_pipelines([a, wider], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()                                  # nothing half-written


def test_a_soup_that_fails_while_writing_leaves_no_folder(tmp_path, monkeypatch):
    """A failure after the first weights file was written (a full disk, say) leaves neither the soup folder nor
    its staging folder; with overwrite the folder that stood there before is kept until a soup replaces it."""
    from stable_diffusion_chinese.training import soup

    a, b = two_runs(tmp_path)
    real_save, calls = soup.paddle.save, []

    def save_once_then_fail(state, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real_save(state, path)

    monkeypatch.setattr(soup.paddle, "save", save_once_then_fail)
    with pytest.raises(OSError, match="No space left"):
        average_pipelines([a, b], tmp_path / "soup")
    assert len(calls) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stale.txt").write_text("an earlier soup")
    calls.clear()
    with pytest.raises(OSError, match="No space left"):
        average_pipelines([a, b], tmp_path / "old", overwrite=True)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["stale.txt"]
    monkeypatch.setattr(soup.paddle, "save", real_save)
    average_pipelines([a, b], tmp_path / "old", overwrite=True)
    assert not (tmp_path / "old" / "stale.txt").exists() and (tmp_path / "old" / "unet" / "model.pdparams").is_file()


def test_the_soup_script_says_what_is_wrong_in_one_line(tmp_path):
    a, _ = two_runs(tmp_path)
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "soup"), str(a), str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "nope has no unet" in out.stderr and "Traceback" not in out.stderr
