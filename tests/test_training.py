"""The training loop on tiny networks: the loss goes down, resuming equals not stopping, folder data."""
import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from stable_diffusion_chinese.models.unet import UNet2DConditionModel
from stable_diffusion_chinese.models.vae import AutoencoderKL
from stable_diffusion_chinese.text.bert import BertTextEncoder
from stable_diffusion_chinese.tokenizers.bert import BertTokenizer
from stable_diffusion_chinese.training import FolderData, SceneData, TrainConfig, Trainer
from stable_diffusion_chinese.scenes.sampling import KIND_WEIGHTS, sample_scene
from stable_diffusion_chinese.scenes.world import Scene, SceneObject
from stable_diffusion_chinese.training.noise import NoiseSchedule, training_noise
from stable_diffusion_chinese.training.tasks import DiffusionTask, VAETask, edge_loss

TINY_UNET = dict(sample_size=16, block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4,
                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=16, attention_head_dim=2)
TINY_VAE = dict(block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4, sample_size=128)
TINY_BERT = dict(vocab_size=21128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=16)


def tiny_task(seed=0, latent_reuse=2, batch_size=2):
    paddle.seed(seed)
    unet = UNet2DConditionModel.from_config(TINY_UNET)
    vae = AutoencoderKL.from_config(TINY_VAE)
    bert = BertTextEncoder.from_config(TINY_BERT)
    return DiffusionTask(unet, bert, vae, BertTokenizer(model_max_length=16), NoiseSchedule(),
                         SceneData(batch_size, seed=seed), seed=seed, caption_dropout=0.5, latent_reuse=latent_reuse)


def config(**overrides):
    values = dict(steps=4, learning_rate=1e-3, warmup_steps=2, checkpoint_every=2, log_every=1, ema_decay=0.9,
                  batch_size=2)
    return TrainConfig(**{**values, **overrides})


def fixed_loss(task, step=0) -> float:
    with paddle.no_grad():
        return float(task.loss(step))


def test_vae_stage_lowers_the_reconstruction_loss(tmp_path):
    paddle.seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE)
    task = VAETask(vae, SceneData(2, seed=0), kl_weight=1e-5, seed=0, crop=32)
    before = np.mean([fixed_loss(task, s) for s in range(3)])
    Trainer(task, config(steps=30, learning_rate=3e-3, checkpoint_every=100), tmp_path).run(progress=False)
    after = np.mean([fixed_loss(task, s) for s in range(3)])
    assert after < 0.6 * before


def test_decoder_fine_tuning_leaves_the_encoder_bit_for_bit(tmp_path):
    paddle.seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE)
    encoder_before = {k: v.numpy().copy() for k, v in vae.state_dict().items()
                      if not k.startswith(("decoder.", "post_quant"))}
    decoder_before = {k: v.numpy().copy() for k, v in vae.decoder.state_dict().items()}
    task = VAETask(vae, SceneData(2, seed=0, background_probability=1.0), kl_weight=1e-5, seed=0, crop=32,
                   train_encoder=False)
    assert set(task.trainable) == {"decoder", "post_quant_conv"}
    before = np.mean([fixed_loss(task, s) for s in range(3)])
    trainer = Trainer(task, config(steps=30, learning_rate=3e-3, checkpoint_every=100), tmp_path)
    trainer.run(progress=False)
    assert np.mean([fixed_loss(task, s) for s in range(3)]) < 0.7 * before
    for key, value in vae.state_dict().items():
        if key in encoder_before:
            assert np.array_equal(value.numpy(), encoder_before[key]), key
    assert any(not np.array_equal(v.numpy(), decoder_before[k]) for k, v in vae.decoder.state_dict().items())
    assert all(key.startswith(("decoder.", "post_quant_conv.")) for key in trainer.ema.shadow)


def test_edge_loss_sees_outlines_not_flat_colour():
    star = np.full((1, 3, 16, 16), -0.5, np.float32)
    star[:, :, 4:12, 4:12] = 0.5
    target = paddle.to_tensor(star)
    assert float(edge_loss(target, target)) == 0.0
    assert float(edge_loss(target + 0.3, target)) < 1e-6         # a shift of every pixel moves no edge
    blurred = paddle.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, exclusive=True)
    dark_rim = star.copy()
    dark_rim[:, :, 3, 3:13] = dark_rim[:, :, 12, 3:13] = -1.0
    assert float(edge_loss(blurred, target)) > 0.01
    assert float(edge_loss(paddle.to_tensor(dark_rim), target)) > 0.01
    paddle.seed(0)
    task = VAETask(AutoencoderKL.from_config(TINY_VAE), SceneData(2, seed=0), kl_weight=1e-5, seed=0, crop=32,
                   train_encoder=False, edge_weight=2.0)
    total = fixed_loss(task)
    parts = task.last_parts
    assert parts["edge"] > 0 and abs(total - (parts["l1"] + parts["l2"] + 2.0 * parts["edge"])) < 1e-5
    with pytest.raises(ValueError, match="edge_weight"):
        TrainConfig(edge_weight=-1.0)


def test_scene_data_can_ask_for_more_named_backgrounds():
    def share(p):
        scenes = [s for i in range(20) for s in SceneData(8, seed=1, background_probability=p).scenes(i)[0]]
        return np.mean([s.background is not None for s in scenes if s.style != "ink"])
    assert share(1.0) > 0.9 and share(0.0) == 0.0 and 0.1 < share(0.2) < 0.35


def test_scene_data_draws_scene_kinds_as_weighted():
    def kinds(weights):
        data = SceneData(16, seed=2, kinds=weights)
        return collections.Counter(s.kind for i in range(25) for s in data.scenes(i)[0])
    assert set(kinds({"pair": 1.0})) == {"pair"}
    heavy = kinds({"single": 1, "count": 1, "pair": 6})    # weights need not sum to 1
    assert heavy["pair"] / sum(heavy.values()) > 0.6 and heavy["single"] > 0 and heavy["count"] > 0
    assert SceneData(16, seed=2).scenes(0)[0] == SceneData(16, seed=2, kinds=dict(KIND_WEIGHTS)).scenes(0)[0]
    for bad, named in (({"triple": 1.0}, "triple"), ({"pair": -1.0, "single": 2.0}, ">= 0"), ({"pair": 0}, "not all 0")):
        with pytest.raises(ValueError, match=named):
            SceneData(4, kinds=bad)
        with pytest.raises(ValueError, match=named):
            sample_scene(np.random.default_rng(0), kind_weights=bad)
    with pytest.raises(ValueError, match="sum to 1"):
        sample_scene(np.random.default_rng(0), kind_weights={"single": 1, "pair": 1})


def test_twins_follow_their_scene_bound_the_other_way_round():
    from stable_diffusion_chinese.scenes.sampling import held_out, twin
    from stable_diffusion_chinese.training.stages import DIFFUSION_KINDS, diffusion_data

    data = diffusion_data(TrainConfig(batch_size=32, twins=True))
    batches = [data.scenes(i)[0] for i in range(30)]
    twinned = collections.Counter()
    for scenes in batches:
        assert len(scenes) == 32 and not any(held_out(s) for s in scenes)
        i = 0
        while i < len(scenes):
            if i + 1 < len(scenes) and twin(scenes[i]) == scenes[i + 1]:
                twinned[scenes[i].kind if scenes[i].kind == "pair" else "background"] += 1
                i += 2
            else:
                i += 1
    slots = collections.Counter(s.kind for scenes in batches for s in scenes)
    # pairs are drawn half as often and each brings its twin; background scenes bring theirs too, so pairs
    # fill a little less than DIFFUSION_KINDS["pair"] of the slots
    assert DIFFUSION_KINDS["pair"] - 0.07 < slots["pair"] / sum(slots.values()) < DIFFUSION_KINDS["pair"] + 0.01
    assert twinned["pair"] > 0.8 * slots["pair"] / 2 and twinned["background"] > 20
    plain = diffusion_data(TrainConfig(batch_size=32))
    assert plain.scenes(0)[0] == SceneData(32, seed=0, kinds=DIFFUSION_KINDS).scenes(0)[0]

    a, b = SceneObject("circle", "red", 3), SceneObject("triangle", "blue", 5)
    assert twin(Scene((a, b), "pair")) == Scene((SceneObject("circle", "red", 5), SceneObject("triangle", "blue", 3)),
                                                "pair")
    yellow = Scene((SceneObject("circle", "yellow", 4),), "single", background="blue")
    assert twin(yellow) == Scene((SceneObject("circle", "blue", 4),), "single", background="yellow")
    assert twin(Scene((a,), "single")) is None                                  # nothing to bind the other way
    assert twin(Scene((SceneObject("star", "black", 0),), "single", background="yellow", style="cartoon")) is None


def test_count_share_draws_more_count_scenes_and_keeps_the_others_ratio(tmp_path):
    from stable_diffusion_chinese.training import stages

    def kinds(count_share):
        data = stages.diffusion_data(TrainConfig(batch_size=32, count_share=count_share))
        return collections.Counter(s.kind for i in range(30) for s in data.scenes(i)[0])

    plain, more = kinds(0.0), kinds(0.6)
    assert more["count"] / sum(more.values()) == pytest.approx(0.6, abs=0.05)
    assert plain["count"] / sum(plain.values()) == pytest.approx(stages.DIFFUSION_KINDS["count"], abs=0.05)
    ratio = stages.DIFFUSION_KINDS["pair"] / stages.DIFFUSION_KINDS["single"]
    assert more["pair"] / more["single"] == pytest.approx(ratio, rel=0.25)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="count_share"):
            TrainConfig(count_share=bad)
    with pytest.raises(ValueError, match="count_share is for the embedded model's scene data"):
        stages.finetune(tmp_path, tmp_path, tmp_path / "run", TrainConfig(count_share=0.5), progress=False)


def test_style_share_draws_more_of_the_favoured_style_in_diffusion_and_decoder_stages(tmp_path):
    from stable_diffusion_chinese.scenes.sampling import STYLE_WEIGHTS, sample_scene
    from stable_diffusion_chinese.training import stages

    def styles(data):
        return collections.Counter(s.style for i in range(30) for s in data.scenes(i)[0])

    favour_pixel = TrainConfig(batch_size=32, style_share=0.4, favoured_style="pixel")
    plain, more = styles(stages.diffusion_data(TrainConfig(batch_size=32))), styles(stages.diffusion_data(favour_pixel))
    assert more["pixel"] / sum(more.values()) == pytest.approx(0.4, abs=0.05)
    decoder_data = stages.vae_decoder_trainer(tmp_path / "dec", favour_pixel, stages.EMBEDDED_DIR / "vae").task.data
    assert styles(decoder_data)["pixel"] / (30 * 32) == pytest.approx(0.4, abs=0.05)   # the decoder stage's too
    assert plain["pixel"] / sum(plain.values()) == pytest.approx(STYLE_WEIGHTS["pixel"], abs=0.05)
    assert more[None] / more["ink"] == pytest.approx(STYLE_WEIGHTS[None] / STYLE_WEIGHTS["ink"], rel=0.3)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="style_share"):
            TrainConfig(style_share=bad)
    with pytest.raises(ValueError, match="favoured_style must be one of ink, .*got 'sketch'"):
        TrainConfig(style_share=0.3, favoured_style="sketch")
    with pytest.raises(ValueError, match="style_weights must be >= 0 for styles of"):
        sample_scene(np.random.default_rng(0), style_weights={"sketch": 1.0})
    with pytest.raises(ValueError, match="style_share is for the embedded model's scene data"):
        stages.finetune(tmp_path, tmp_path, tmp_path / "run", TrainConfig(style_share=0.5), progress=False)


def test_diffusion_stage_lowers_the_noise_prediction_loss(tmp_path):
    task = tiny_task(latent_reuse=1000)   # one batch, seen with fresh noise and timesteps every step
    before = np.mean([fixed_loss(task, s) for s in range(4)])
    trainer = Trainer(task, config(steps=40, learning_rate=3e-3, checkpoint_every=100, log_every=10), tmp_path)
    trainer.run(progress=False)
    after = np.mean([fixed_loss(task, s) for s in range(4)])
    assert after < 0.8 * before
    log = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [10, 20, 30, 40]


def parameters(trainer):
    state = {f"{n}.{k}": v.numpy() for n, layer in trainer.layers.items() for k, v in layer.state_dict().items()}
    state.update({f"ema.{k}": v.numpy() for k, v in trainer.ema.shadow.items()})
    return state


def test_resume_equals_uninterrupted(tmp_path):
    straight = Trainer(tiny_task(), config(steps=4), tmp_path / "straight")
    straight.run(progress=False)

    first = Trainer(tiny_task(), config(steps=4), tmp_path / "split")
    first.run(until=2, progress=False)
    np.random.seed(123)   # disturb the global RNG: the checkpoint must restore it
    resumed = Trainer(tiny_task(seed=0), config(steps=4), tmp_path / "split")   # fresh objects
    assert resumed.resume() == 2
    resumed.run(progress=False)

    a, b = parameters(straight), parameters(resumed)
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-7, worst
    names = sorted(p.name for p in (tmp_path / "split").iterdir())
    assert names == ["ckpt-00000002.pdckpt", "ckpt-00000004.pdckpt", "loss_log.jsonl", "train_config.json"]


def test_a_resumed_run_logs_each_step_once(tmp_path):
    Trainer(tiny_task(), config(steps=4, log_every=1, checkpoint_every=2), tmp_path).run(progress=False)
    (tmp_path / "ckpt-00000004.pdckpt").unlink()   # stopped after logging steps 3 and 4, before their checkpoint
    with open(tmp_path / "loss_log.jsonl", "a") as f:
        f.write('{"step": 5, "lo')                     # ... while writing a line
    resumed = Trainer(tiny_task(), config(steps=4, log_every=1, checkpoint_every=2), tmp_path)
    assert resumed.resume() == 2
    resumed.run(progress=False)
    log = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]


def test_checkpoint_restores_optimizer_state_and_rng(tmp_path):
    trainer = Trainer(tiny_task(), config(steps=2), tmp_path)
    trainer.run(progress=False)
    expected_numpy = np.random.get_state()[1].copy()
    fresh = Trainer(tiny_task(seed=5), config(steps=2), tmp_path)
    np.random.seed(99)
    fresh.resume()
    assert np.array_equal(np.random.get_state()[1], expected_numpy)
    moments = {k: v for k, v in fresh.optimizer.state_dict().items() if "moment1" in k}
    assert moments and all(np.abs(np.asarray(v)).max() > 0 for v in moments.values())


def write_folder(folder, n=3):
    folder.mkdir()
    lines = []
    for i in range(n):
        Image.fromarray(np.full((40 + 10 * i, 60, 3), 50 * i, np.uint8)).save(folder / f"img{i}.png")
        lines.append(json.dumps({"file_name": f"img{i}.png", "text": f"第{i}张图"}, ensure_ascii=False))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_folder_data_reads_metadata_and_walks_epochs(tmp_path):
    write_folder(tmp_path / "data")
    data = FolderData(tmp_path / "data", batch_size=2, resolution=32, seed=0)
    images, texts = data.batch(0)
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    seen = [t for k in range(3) for t in data.batch(k)[1]]               # 6 picks = two epochs of 3
    assert sorted(seen[:3]) == sorted(seen[3:]) == ["第0张图", "第1张图", "第2张图"]
    for k in range(3):
        again = data.batch(k)
        assert again[1] == data.batch(k)[1]


def test_folder_data_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        FolderData(tmp_path, 1, 32)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "missing.png", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        FolderData(tmp_path, 1, 32)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match='"text"'):
        FolderData(tmp_path, 1, 32)


def test_diffusion_task_trains_on_folder_data(tmp_path):
    write_folder(tmp_path / "data")
    paddle.seed(0)
    task = DiffusionTask(UNet2DConditionModel.from_config(TINY_UNET), BertTextEncoder.from_config(TINY_BERT),
                         AutoencoderKL.from_config(TINY_VAE), BertTokenizer(model_max_length=16), NoiseSchedule(),
                         FolderData(tmp_path / "data", 2, 128), seed=0, train_text_encoder=False)
    assert set(task.trainable) == {"unet"}
    trainer = Trainer(task, config(steps=2), tmp_path / "run")
    assert trainer.run(progress=False) == 2


def test_embedded_text_encoder_starts_with_words_visible():
    """Paddle's default Xavier init made the 21128-row word table 10x smaller than the position table, so
    every caption encoded to nearly the same vectors and no text conditioning was learned; build_network
    now initialises the text encoder as transformers' BERT does (normal 0.02)."""
    from stable_diffusion_chinese.training.models import build_network, load_tokenizer

    encoder, tokenizer = build_network("text_encoder", seed=1), load_tokenizer()
    captions = ["右上角有一个红色的五角星", "左下角是蓝色的圆形", "两个绿色的三角形", "水墨风格，中间有一个黑色的方块"]
    tokens = tokenizer(captions, max_length=16, padding="max_length", truncation=True)
    with paddle.no_grad():
        hidden = encoder.encode(tokens["input_ids"], None).numpy()
    # spread across captions at the word positions, relative to the overall spread of the features
    assert hidden[:, 1:9].std(axis=0).mean() > 0.3 * hidden.std()
    assert float(encoder.embeddings.word_embeddings.weight.std()) == pytest.approx(0.02, rel=0.05)


def test_latent_statistics_normalise_each_channel():
    """The exported VAE config makes fresh scenes' latents zero-mean, unit-spread per channel in the UNet's space."""
    from stable_diffusion_chinese.models.vae import VAEConfig, to_diffusion_latents
    from stable_diffusion_chinese.training.stages import latent_statistics

    paddle.seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE)
    stats = latent_statistics(vae, seed=0)
    assert stats["scaling_factor"] == 1.0 and len(stats["latents_mean"]) == len(stats["latents_std"]) == 4
    config = VAEConfig.from_dict({**TINY_VAE, **stats})
    data, rng, zs = SceneData(16, seed=123), np.random.default_rng(5), []
    with paddle.no_grad():
        for index in range(4):
            posterior = vae.encode(paddle.to_tensor(data.batch(index)[0]))
            # posterior samples, as the diffusion stage trains on (an untrained VAE's posterior spread is large)
            zs.append(posterior.sample(rng.standard_normal(posterior.mean.shape).astype(np.float32)))
        z = paddle.concat(zs)
        latents = to_diffusion_latents(config, z).numpy()
    raw = z.numpy()
    assert np.abs(raw.mean(axis=(0, 2, 3))).max() > 0.05 or np.abs(raw.std(axis=(0, 2, 3)) - 1).max() > 0.2
    np.testing.assert_array_less(np.abs(latents.mean(axis=(0, 2, 3))), 0.3)
    np.testing.assert_allclose(latents.std(axis=(0, 2, 3)), 1.0, atol=0.3)


def test_diffusion_stage_can_start_from_a_pipeline_folder(tmp_path):
    """--init-from: the UNet, the text encoder and their EMA start from the folder's weights, not random ones."""
    import shutil

    from stable_diffusion_chinese.training import stages
    from stable_diffusion_chinese.training.models import EMBEDDED_DIR

    shutil.copytree(EMBEDDED_DIR / "vae", tmp_path / "vae_model")
    cfg = config(batch_size=2)
    fresh = stages.diffusion_trainer(tmp_path, cfg)
    warm = stages.diffusion_trainer(tmp_path, cfg, init_from=EMBEDDED_DIR)
    shipped = UNet2DConditionModel.from_pretrained(EMBEDDED_DIR / "unet").state_dict()
    for key in ("conv_in.weight", "up_blocks.2.attentions.0.transformer_blocks.0.attn2.to_k.weight"):
        np.testing.assert_array_equal(warm.layers["unet"].state_dict()[key].numpy(), shipped[key].numpy())
        np.testing.assert_array_equal(warm.ema.shadow["unet." + key].numpy(), shipped[key].numpy())
        assert not np.allclose(fresh.layers["unet"].state_dict()[key].numpy(), shipped[key].numpy())
    words = BertTextEncoder.from_pretrained(EMBEDDED_DIR / "text_encoder").state_dict()
    key = "embeddings.word_embeddings.weight"
    np.testing.assert_array_equal(warm.layers["text_encoder"].state_dict()[key].numpy(), words[key].numpy())


def test_export_ships_a_fine_tuned_decoder_but_refuses_another_encoder(tmp_path):
    import shutil

    from stable_diffusion_chinese.training import stages
    from stable_diffusion_chinese.training.models import EMBEDDED_DIR, save_network

    shutil.copytree(EMBEDDED_DIR / "vae", tmp_path / "vae_model")
    cfg = config(batch_size=2, steps=1)
    stages.diffusion_trainer(tmp_path, cfg, init_from=EMBEDDED_DIR).run(progress=False)
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae_model")
    vae.decoder.conv_out.bias.set_value(vae.decoder.conv_out.bias + 0.5)   # a "fine-tuned" decoder
    save_network(vae, tmp_path / "new_decoder")
    stages.export_embedded(tmp_path, cfg, tmp_path / "out", vae_dir=tmp_path / "new_decoder")
    shipped = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    np.testing.assert_allclose(shipped.decoder.conv_out.bias.numpy(), vae.decoder.conv_out.bias.numpy(), atol=1e-3)
    vae.encoder.conv_in.bias.set_value(vae.encoder.conv_in.bias + 0.5)
    save_network(vae, tmp_path / "new_encoder")
    with pytest.raises(ValueError, match=r"different encoder \(encoder.conv_in.bias\)"):
        stages.export_embedded(tmp_path, cfg, tmp_path / "out2", vae_dir=tmp_path / "new_encoder")


def test_export_writes_a_pipeline_folder_again_with_a_fine_tuned_decoder(tmp_path):
    from stable_diffusion_chinese.training.models import EMBEDDED_DIR, save_network

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_embedded.py"

    def export(*options):
        return subprocess.run([sys.executable, str(script), "export", *map(str, options)], capture_output=True,
                              text=True)

    vae = AutoencoderKL.from_pretrained(EMBEDDED_DIR / "vae")
    vae.decoder.conv_out.bias.set_value(vae.decoder.conv_out.bias + 0.5)   # a "fine-tuned" decoder
    save_network(vae, tmp_path / "new_decoder")
    done = export("--model", EMBEDDED_DIR, "--vae", tmp_path / "new_decoder", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    shipped = AutoencoderKL.from_pretrained(out / "vae")
    np.testing.assert_allclose(shipped.decoder.conv_out.bias.numpy(), vae.decoder.conv_out.bias.numpy(), atol=1e-3)
    assert paddle.load(str(out / "vae" / "model.pdparams"))["decoder.conv_out.bias"].dtype == paddle.float16
    for part in ("unet/model.pdparams", "text_encoder/model.pdparams", "scheduler/scheduler_config.json",
                 "vae/config.json"):
        assert (out / part).read_bytes() == (EMBEDDED_DIR / part).read_bytes()

    again = export("--model", EMBEDDED_DIR, "--vae", tmp_path / "new_decoder", "--out", out)
    assert again.returncode == 1 and "exists and is not empty" in again.stderr and "Traceback" not in again.stderr
    vae.encoder.conv_in.bias.set_value(vae.encoder.conv_in.bias + 0.5)
    save_network(vae, tmp_path / "new_encoder")
    refused = export("--model", EMBEDDED_DIR, "--vae", tmp_path / "new_encoder", "--out", tmp_path / "out2")
    assert refused.returncode == 1 and "different encoder (encoder.conv_in.bias)" in refused.stderr
    assert not (tmp_path / "out2").exists()
    assert not (tmp_path / "out2.partial").exists()
    not_a_pipeline = export("--model", tmp_path / "new_decoder", "--vae", tmp_path / "new_decoder", "--out",
                            tmp_path / "out4")
    assert not_a_pipeline.returncode == 1 and "has no unet/model.pdparams; is it a pipeline folder?" in not_a_pipeline.stderr
    assert "needs --vae and --out" in export("--model", EMBEDDED_DIR, "--out", tmp_path / "out3").stderr
    assert "required: --run-dir" in export("--out", tmp_path / "out3").stderr


def test_min_snr_weights_follow_the_paper():
    schedule = NoiseSchedule()
    t = np.array([0, 100, 500, 999])
    snr = schedule.alphas_cumprod[t] / (1 - schedule.alphas_cumprod[t])
    weights = schedule.min_snr_weights(t, gamma=5.0)
    np.testing.assert_allclose(weights, np.minimum(snr, 5.0) / snr, rtol=1e-12)
    assert weights[0] < 0.01 and weights[-1] == 1.0   # t=0 is nearly noise-free (SNR ~ 1e3), t=999 pure noise
    v = NoiseSchedule(prediction_type="v_prediction").min_snr_weights(t, gamma=5.0)
    np.testing.assert_allclose(v, np.minimum(snr, 5.0) / (snr + 1), rtol=1e-12)


def test_min_snr_loss_is_the_weighted_mean_of_per_sample_errors():
    plain = tiny_task(batch_size=4)
    huge_gamma = tiny_task(batch_size=4)
    huge_gamma.snr_gamma = 1e12            # min(SNR, gamma) = SNR: every epsilon weight is 1
    weighted = tiny_task(batch_size=4)
    weighted.snr_gamma = 5.0
    a, b, c = (fixed_loss(task, 3) for task in (plain, huge_gamma, weighted))
    assert abs(a - b) <= 1e-6 * a
    assert c < a                            # weights are <= 1 and some timesteps of step 3 have SNR > 5
    with pytest.raises(ValueError, match="snr_gamma"):
        TrainConfig(snr_gamma=-1)


def test_offset_noise_shifts_each_sample_and_channel_and_is_off_by_default():
    shape = (64, 4, 16, 16)
    plain = training_noise(np.random.default_rng(7), shape)
    np.testing.assert_array_equal(plain, np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    offset = training_noise(np.random.default_rng(7), shape, offset=0.5)
    shift = offset - plain                  # one value per sample and channel (up to float32 rounding)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[..., :1, :1], shape), atol=1e-6)
    # channel means of 16x16 standard noise spread 1/16; the offset adds 0.5 to that in quadrature
    means = offset.mean(axis=(2, 3))
    assert 0.4 < means.std() < 0.6 and abs(plain.mean(axis=(2, 3)).std() - 1 / 16) < 0.02
    # the diffusion task draws the same noise: the offset changes its loss, and is refused when negative
    a, b = tiny_task(batch_size=4), tiny_task(batch_size=4)
    b.noise_offset = 0.5
    assert fixed_loss(a, 3) != fixed_loss(b, 3)
    with pytest.raises(ValueError, match="noise_offset"):
        TrainConfig(noise_offset=-0.1)


def test_constant_rate_can_end_with_a_linear_decay():
    plain = TrainConfig(steps=1000, learning_rate=1e-3, warmup_steps=10)
    wsd = TrainConfig(steps=1000, learning_rate=1e-3, warmup_steps=10, decay_steps=200, min_lr_ratio=0.1)
    assert plain.learning_rate_at(999) == plain.learning_rate_at(20) == 1e-3 == wsd.learning_rate_at(800)
    assert wsd.learning_rate_at(5) == plain.learning_rate_at(5) < 1e-3        # the warm-up is unchanged
    np.testing.assert_allclose([wsd.learning_rate_at(s) for s in (900, 1000, 1100)], [5.5e-4, 1e-4, 1e-4])
    rates = [wsd.learning_rate_at(s) for s in range(790, 1000)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    for bad, message in ((dict(decay_steps=-1), "decay_steps must be >= 0"),
                         (dict(decay_steps=10, lr_schedule="cosine"), "'cosine' decays all along")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)


def test_binding_probe_tells_a_contextual_encoder_from_a_bag_of_words():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from probe_text_binding import binding
    from stable_diffusion_chinese.training.models import init_like_bert

    tokenizer = BertTokenizer(model_max_length=32)
    paddle.seed(3)
    encoder = BertTextEncoder.from_config({**TINY_BERT, "max_position_embeddings": 32})
    init_like_bert(encoder)
    # BERT's initial attention is nearly uniform and adds little to the residual, and a uniform average of
    # (word + position) vectors is itself a bag of words: large query/key/output weights make each token
    # take in the words around it, depending on where they sit
    for layer in encoder.encoder.layer:
        for projection in (layer.attention.self.query, layer.attention.self.key, layer.attention.output.dense):
            paddle.assign(projection.weight * 50.0, projection.weight)
    encoder.eval()

    def tokenize(text):
        return list(tokenizer([text], max_length=32, padding="max_length", truncation=True)["input_ids"][0])

    def encode(ids):
        with paddle.no_grad():
            return encoder.encode([ids], None).numpy()[0]
    contextual = binding(encode, tokenize)
    for layer in encoder.encoder.layer:           # no attention output: every token sees only itself
        paddle.assign(paddle.zeros_like(layer.attention.output.dense.weight), layer.attention.output.dense.weight)
        paddle.assign(paddle.zeros_like(layer.attention.output.dense.bias), layer.attention.output.dense.bias)
    assert binding(encode, tokenize) < 1e-6 < 1e-4 < contextual


def test_training_script_names_a_missing_vae_or_bad_option_in_one_line(tmp_path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "train_embedded.py"
    for extra, message in ((["vae-decoder"], "has no trained VAE; run the 'vae' stage first"),
                           (["diffusion"], "has no trained VAE; run the 'vae' stage first"),
                           (["diffusion", "--snr-gamma", "-1"], "snr_gamma must be >= 0"),
                           (["finetune", "--model", str(tmp_path), "--data", str(tmp_path), "--binding-weight", "0.3"],
                            "binding_weight is for the embedded model's scene data")):
        run = subprocess.run([sys.executable, str(script), *extra, "--run-dir", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 1, run.stderr[-2000:]
        assert "Traceback" not in run.stderr and "error: " in run.stderr and message in run.stderr, run.stderr


def test_grown_unet_computes_what_the_trained_one_did_and_refuses_other_changes(tmp_path):
    """grow_unet: cross-attention added where there was none starts as an exact no-op (zero proj_out),
    then trains; a config that changes a trained weight's shape, or adds a non-attention layer, is refused."""
    from stable_diffusion_chinese.training.models import grow_unet, save_network

    paddle.seed(3)
    trained = UNet2DConditionModel.from_config(TINY_UNET)
    for p in trained.parameters():              # make every weight matter (Paddle zero-inits nothing, but be sure)
        p.set_value(p + 0.01 * paddle.randn(p.shape))
    save_network(trained, tmp_path / "unet")
    everywhere = dict(TINY_UNET, down_block_types=["CrossAttnDownBlock2D"] * 2,
                      up_block_types=["CrossAttnUpBlock2D"] * 2)
    (tmp_path / "grown.json").write_text(json.dumps(everywhere), encoding="utf-8")
    grown = grow_unet(tmp_path / "unet", tmp_path / "grown.json")
    added = [k for k in grown.state_dict() if k not in trained.state_dict()]
    assert any(k.startswith("down_blocks.1.attentions.0.") for k in added)
    assert any(k.startswith("up_blocks.0.attentions.1.") for k in added)
    x, t, context = paddle.randn([2, 4, 16, 16]), paddle.to_tensor([10, 900]), paddle.randn([2, 5, 16])
    trained.eval(), grown.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(grown(x, t, context).numpy(), trained(x, t, context).numpy())
    # the added branch is live: its proj_out gets a gradient (zero-initialised, not cut off)
    grown.train()
    grown(x, t, context).square().mean().backward()
    assert float(grown.down_blocks[1].attentions[0].proj_out.weight.grad.abs().sum()) > 0

    wider = dict(everywhere, block_out_channels=[8, 32])
    (tmp_path / "wider.json").write_text(json.dumps(wider), encoding="utf-8")
    with pytest.raises(ValueError, match="trained weights have no place of their shape"):
        grow_unet(tmp_path / "unet", tmp_path / "wider.json")
    deeper = dict(TINY_UNET, transformer_layers_per_block=2)   # a second layer inside a trained transformer
    (tmp_path / "deeper.json").write_text(json.dumps(deeper), encoding="utf-8")
    with pytest.raises(ValueError, match="other than whole new attention blocks"):
        grow_unet(tmp_path / "unet", tmp_path / "deeper.json")


def test_a_checkpoint_of_another_architecture_is_refused_not_loaded_in_part(tmp_path):
    """Paddle's set_state_dict only warns on missing / unexpected keys: resuming (or exporting) a grown UNet's
    run without its --unet-config would quietly drop the added blocks. load_checkpoint names the mismatch."""
    from stable_diffusion_chinese.training.checkpoint import load_checkpoint, save_checkpoint
    from stable_diffusion_chinese.training.ema import EMA

    def parts(config):
        unet = UNet2DConditionModel.from_config(config)
        layers = {"unet": unet}
        return layers, paddle.optimizer.AdamW(parameters=unet.parameters()), EMA(layers)

    grown = dict(TINY_UNET, down_block_types=["CrossAttnDownBlock2D"] * 2, up_block_types=["CrossAttnUpBlock2D"] * 2)
    path = save_checkpoint(tmp_path, 1, *parts(grown))
    with pytest.raises(ValueError, match=r"'unet' weights of another architecture: 0 missing .* unexpected .*--unet-config"):
        load_checkpoint(path, *parts(TINY_UNET))
    step = load_checkpoint(path, *parts(grown))["step"]            # its own architecture still loads
    assert step == 1
