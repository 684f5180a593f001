"""The scene-reading objective (training/scene_reader.py) and the stages that use it."""
import shutil

import numpy as np
import paddle
import pytest

from stable_diffusion_chinese.scenes.world import Scene, SceneObject
from stable_diffusion_chinese.text.bert import BertTextEncoder
from stable_diffusion_chinese.tokenizers.bert import BertTokenizer
from stable_diffusion_chinese.training import SceneData, TrainConfig, Trainer
from stable_diffusion_chinese.training.scene_reader import IGNORE, SceneReader, scene_targets
from stable_diffusion_chinese.training.tasks import TextReadingTask

from test_training import TINY_BERT, config, fixed_loss, tiny_task

RED_CIRCLE, BLUE_TRIANGLE = SceneObject("circle", "red", 3), SceneObject("triangle", "blue", 5)


def test_targets_say_what_the_caption_says_and_ignore_the_rest():
    cells, whole = scene_targets(Scene((RED_CIRCLE, BLUE_TRIANGLE), "pair", style="oil"))
    assert cells[3].tolist() == [1, 1] and cells[5].tolist() == [3, 5]          # circle=1, red=1; triangle=3, blue=5
    assert (cells[[0, 1, 2, 4, 6, 7, 8]] == 0).all()                             # the other cells are empty
    assert whole.tolist() == [0, 4, IGNORE, IGNORE, IGNORE]                      # a pair has no one count or object

    _, whole = scene_targets(Scene((SceneObject("star", "yellow", 0),), "single", background="blue"))
    assert whole.tolist() == [5, 0, 0, 3, 2]                                     # background blue, no style, one star

    three = Scene(tuple(SceneObject("square", "black", c) for c in (0, 4, 8)), "count")
    cells, whole = scene_targets(three)
    assert (cells == IGNORE).all()                                               # the caption says no positions
    assert whole.tolist() == [0, 0, 2, 1, 7]


def reading_task(seed=0, anchor_weight=0.0, batch_size=16):
    paddle.seed(seed)
    encoder = BertTextEncoder.from_config(TINY_BERT)
    anchor = BertTextEncoder.from_config(TINY_BERT)
    anchor.set_state_dict(encoder.state_dict())
    return TextReadingTask(encoder, SceneReader(16, num_heads=2), BertTokenizer(model_max_length=16),
                           SceneData(batch_size, seed=seed), anchor=anchor, anchor_weight=anchor_weight)


def test_reading_stage_learns_to_read_captions_and_reports_drift(tmp_path):
    task = reading_task(anchor_weight=1.0)
    before = np.mean([fixed_loss(task, s) for s in range(3)])
    assert task.last_parts["drift"] == 0.0                                       # the anchor starts equal
    Trainer(task, config(steps=40, learning_rate=3e-3, checkpoint_every=100, batch_size=16), tmp_path).run(
        progress=False)
    after = np.mean([fixed_loss(task, s) for s in range(3)])
    assert after < 0.8 * before
    assert task.last_parts["drift"] > 0 and {"read_colour", "read_shape", "read_scene_cells"} <= set(task.last_parts)
    with pytest.raises(ValueError, match="anchor"):
        TextReadingTask(task.text_encoder, task.reader, task.tokenizer, task.data, anchor_weight=1.0)


def test_diffusion_loss_adds_the_weighted_reading_loss():
    task = tiny_task(batch_size=4)
    plain = fixed_loss(task, 1)
    paddle.seed(1)
    task.reader, task.reading_weight = SceneReader(16, num_heads=2), 0.5
    assert "scene_reader" in task.trainable
    total = fixed_loss(task, 1)
    parts = task.last_parts
    assert parts["denoising"] == pytest.approx(plain, rel=1e-5)                # same noise, same timesteps
    assert total == pytest.approx(parts["denoising"] + 0.5 * parts["reading"], rel=1e-5)
    with pytest.raises(ValueError, match="scene reader"):
        type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, task.schedule, task.data, seed=0,
                   reading_weight=1.0)
    for name in ("reading_weight", "anchor_weight"):
        with pytest.raises(ValueError, match=name):
            TrainConfig(**{name: -1.0})


def test_text_reading_stage_writes_a_pipeline_the_diffusion_stage_reads_with_its_reader(tmp_path):
    from stable_diffusion_chinese.training import stages
    from stable_diffusion_chinese.training.models import EMBEDDED_DIR

    out = stages.train_text_reading(tmp_path, config(steps=2, batch_size=8, anchor_weight=1.0), EMBEDDED_DIR,
                                    progress=False)
    assert (out / "unet" / "model.pdparams").read_bytes() == (EMBEDDED_DIR / "unet" / "model.pdparams").read_bytes()
    trained = BertTextEncoder.from_pretrained(out / "text_encoder").state_dict()
    shipped = BertTextEncoder.from_pretrained(EMBEDDED_DIR / "text_encoder").state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert not np.array_equal(trained[key].numpy(), shipped[key].numpy())       # the encoder was trained
    reader = paddle.load(str(out / stages.READER_FILE))

    shutil.copytree(EMBEDDED_DIR / "vae", tmp_path / "vae_model")
    diffusion = stages.diffusion_trainer(tmp_path, config(batch_size=2, reading_weight=1.0), init_from=out)
    loaded = diffusion.layers["scene_reader"].state_dict()
    for name, value in reader.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy())


def test_export_keeps_the_diffusion_runs_reader_for_the_next_run(tmp_path):
    """The reader is not needed to generate, but a run started --init-from the exported folder must go on with
    the trained one (EMA weights), not a random reader pulling the text encoder about."""
    from stable_diffusion_chinese.training import stages
    from stable_diffusion_chinese.training.models import EMBEDDED_DIR

    shutil.copytree(EMBEDDED_DIR / "vae", tmp_path / "vae_model")
    cfg = config(steps=2, batch_size=2, reading_weight=1.0, checkpoint_every=2, ema_decay=0.5)
    trainer = stages.diffusion_trainer(tmp_path, cfg)
    trainer.run(progress=False)
    stages.export_embedded(tmp_path, cfg, tmp_path / "out")
    saved = paddle.load(str(tmp_path / "out" / stages.READER_FILE))
    averaged = {key[len("scene_reader."):]: value for key, value in trainer.ema.shadow.items()
                if key.startswith("scene_reader.")}
    assert saved and set(saved) == set(averaged)
    for name, value in saved.items():
        np.testing.assert_array_equal(value.numpy(), averaged[name].numpy())
    shutil.copytree(EMBEDDED_DIR / "vae", tmp_path / "next" / "vae_model")
    next_run = stages.diffusion_trainer(tmp_path / "next", cfg, init_from=tmp_path / "out")
    loaded = next_run.layers["scene_reader"].state_dict()
    for name, value in saved.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy())
