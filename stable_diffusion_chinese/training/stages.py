"""The embedded model's training stages and the fine-tuning entry, as functions the script calls.

Run folder layout (``run_dir``):
  vae/            VAE-stage checkpoints, loss_log.jsonl
  vae_model/      the trained VAE (EMA weights, scaling_factor measured) used by the next stage
  vae_decoder/    ``vae-decoder``: decoder fine-tuning checkpoints (the encoder frozen)
  vae_decoder_model/  that VAE: vae_model's encoder and latent statistics, the fine-tuned decoder
  reading/        ``text-reading``: text encoder + scene reader checkpoints, loss_log.jsonl
  reading_model/  that stage's result: its ``--init-from`` pipeline with the new text encoder, plus ``scene_reader/``
  diffusion/      UNet + text-encoder checkpoints, loss_log.jsonl
  pipeline/       ``export``: a complete, loadable pipeline folder (fp16 weights)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import paddle

from ..folders import staged_folder
from ..models.vae import AutoencoderKL
from ..scenes.sampling import STYLE_WEIGHTS, with_share
from .config import TrainConfig
from .data import FolderData, SceneData
from .models import (CONFIG_EXTRAS, EMBEDDED_DIR, NETWORKS, build_network, export_pipeline, grow_unet, load_tokenizer,
                     check_new_folder, check_pipeline_folders, read_json, save_network)
from .noise import NoiseSchedule
from .scene_reader import SceneReader
from .tasks import DECODER_PARTS, DiffusionTask, TextReadingTask, VAETask
from .trainer import Trainer

VAE_CROP = 64
VAE_DEFAULTS = dict(steps=3000, batch_size=8, learning_rate=5e-4, warmup_steps=100, ema_decay=0.99, lr_schedule="cosine",
                    checkpoint_every=100, log_every=10)
DIFFUSION_DEFAULTS = dict(steps=200_000, batch_size=32, learning_rate=5e-4, warmup_steps=200, ema_decay=0.999,
                          checkpoint_every=100, log_every=10, latent_reuse=4, snr_gamma=5.0, noise_offset=0.1,
                          twins=True, reading_weight=1.0, binding_weight=0.3, binding_min_timestep=600,
                          leak_weight=1.0, leak_position_words=True, background_leak_weight=1.0)
# leak_position_words / background_leak_weight: run 12d (docs/embedded_model.md) -- 200 held-out prompts colour
# 90.9 -> 93.8 %, shape 87.0 -> 89.5 %, pairs both objects right 71.4 -> 78.6 %, named backgrounds' shapes 67.6 -> 81.1 %
# leak_weight: run 11 (docs/embedded_model.md) -- objects drawing the other object's colour went 13 -> 5 of 120
# and pairs 68.6 -> 71.4 % both objects right (same decoder)
# binding_weight / binding_min_timestep: runs 7-9 (docs/embedded_model.md) -- with them pairs went 32.9 -> 61.4 %
# both objects right and the cross-attention of a colour word moved into its own object's cell
# reading_weight: run 4 (docs/embedded_model.md) kept the scene-reading loss on while the UNet trained, so the
# text encoder went on binding words to positions (probe 0.0001 -> 0.0077) and pairs went 12.9 -> 27.1 % right
SCALING_BATCHES = 8
# the text-reading stage (training/scene_reader.py): captions only, no images, so big batches are cheap
READING_DEFAULTS = dict(steps=1200, batch_size=128, learning_rate=1e-3, warmup_steps=50, ema_decay=0.99,
                        checkpoint_every=100, log_every=10, twins=True, anchor_weight=3.0)
READER_FILE = "scene_reader/model.pdparams"
VAE_DECODER_DEFAULTS = dict(steps=9000, batch_size=8, learning_rate=6e-4, warmup_steps=50, ema_decay=0.99,
                            lr_schedule="constant", decay_steps=500, edge_weight=1.0, checkpoint_every=100,
                            log_every=10)
# decoder recipe of the thirteenth session (docs/embedded_model.md, "Decoder 2"): 1500 cosine steps from 2e-4
# (the fourth session's) or 1000 more at 2e-4 left shapes on named backgrounds at 54 % on the reconstructions,
# while 200 steps at 1e-3 on eight such images fitted them, so the decoder could draw them but had been
# trained too little and too gently; these 9000 steps at 6e-4 with the edge term took them to 83.8 %, and the
# shipped decoder 3 is the same run resumed with --steps 15000 (89.2 %)
# objects on a named background are what the first VAE drew worst (blobs instead of shapes: 17 of the 21
# shape errors on the 200 evaluation scenes' reconstructions), so the decoder sees them 2.5x as often
DECODER_BACKGROUND_PROBABILITY = 0.5
# two-object scenes are the ones the model gets wrong (step 3700, 200 held-out prompts: single scenes
# 74-86 % right per attribute, pairs 9 % both shapes and 3 % both objects; counts 34 % right numbers), and a
# pair or count scene teaches single objects too, so the diffusion stage draws them more often than the
# sampler's defaults (0.45 / 0.25 / 0.30). Run 3 (docs/embedded_model.md) uses them from step 3800. These are
# shares of a batch's slots; with twins a drawn pair fills two (diffusion_data).
DIFFUSION_KINDS = {"single": 0.25, "count": 0.30, "pair": 0.45}
# From the sixth session on (docs/embedded_model.md, run 3's history):
# noise_offset 0.1 (diffusers' suggested value): with SD's schedule the step-6600 model took its background from
#   x_T's channel means, not from the prompt (training/noise.py training_noise);
# twins: its text encoder read captions as bags of words (a pair caption's tokens encoded the same whether the
#   red circle was on the left or the right), so pairs bound colours and shapes to the wrong place, and
#   "blue background, yellow circle" often drew a blue circle on yellow.


def train_vae(run_dir: str | Path, config: TrainConfig, progress: bool = True) -> Path:
    run_dir = Path(run_dir)
    vae = build_network("vae", EMBEDDED_DIR, seed=config.seed)
    trainer = Trainer(VAETask(vae, SceneData(config.batch_size, config.seed), config.kl_weight, config.seed, VAE_CROP,
                              edge_weight=config.edge_weight),
                      config, run_dir / "vae")
    trainer.resume()
    trainer.run(progress=progress)
    return export_vae(trainer, run_dir / "vae_model", config.seed)


def export_vae(trainer: Trainer, out_dir: Path, seed: int) -> Path:
    """EMA weights + the per-channel latent statistics the diffusion stage normalises with."""
    vae = build_network("vae", EMBEDDED_DIR, seed=seed)
    trainer.ema.copy_to({"vae": vae})
    save_network(vae, out_dir, fp16=False, extra_config={"_class_name": "AutoencoderKL",
                                                         **latent_statistics(vae, seed)})
    return out_dir


def vae_decoder_trainer(run_dir: str | Path, config: TrainConfig, init_from: str | Path | None = None) -> Trainer:
    """Fine-tune the decoder of ``init_from`` (default ``run_dir/vae_model``) with the encoder frozen, so
    the latents, their statistics and any diffusion model trained on them stay valid."""
    run_dir = Path(run_dir)
    vae = _trained_vae(Path(init_from) if init_from else run_dir / "vae_model", " or give --init-from <a VAE folder>")
    data = SceneData(config.batch_size, config.seed, background_probability=DECODER_BACKGROUND_PROBABILITY,
                     styles=_style_weights(config))
    task = VAETask(vae, data, config.kl_weight, config.seed, VAE_CROP, train_encoder=False,
                   edge_weight=config.edge_weight)
    return Trainer(task, config, run_dir / "vae_decoder")


def train_vae_decoder(run_dir: str | Path, config: TrainConfig, init_from: str | Path | None = None,
                      progress: bool = True) -> Path:
    trainer = vae_decoder_trainer(run_dir, config, init_from)
    trainer.resume()
    trainer.run(progress=progress)
    vae = trainer.task.vae
    trainer.ema.copy_to(trainer.layers)   # the VAE's own decoder now holds the averaged weights
    out = Path(run_dir) / "vae_decoder_model"
    save_network(vae, out, fp16=False, extra_config={"_class_name": "AutoencoderKL"})
    return out


def _trained_vae(vae_dir: Path, hint: str = "") -> AutoencoderKL:
    """The VAE a later stage builds on, or an error that says which stage makes it."""
    if not (vae_dir / "config.json").is_file():
        raise FileNotFoundError(f"{vae_dir} has no trained VAE; run the 'vae' stage first{hint}")
    return AutoencoderKL.from_pretrained(vae_dir)


def latent_statistics(vae: AutoencoderKL, seed: int) -> dict:
    """``latents_mean`` / ``latents_std`` per channel of posterior samples of fresh scenes, and
    ``scaling_factor`` 1, so the UNet sees zero-mean unit-variance channels (SDXL's config keys).

    SD's single ``scaling_factor`` = 1 / std of all samples (how 0.18215 was chosen) is not enough here:
    this VAE's channel means (up to 1.5) dominate that std, which left each channel's content at a
    quarter of the noise scale, and a first diffusion run drew textures (docs/embedded_model.md).
    """
    vae.eval()
    data = SceneData(16, seed=seed + 1)
    samples = []
    with paddle.no_grad():
        for index in range(SCALING_BATCHES):
            posterior = vae.encode(paddle.to_tensor(data.batch(index)[0]))
            noise = np.random.default_rng([seed, index]).standard_normal(posterior.mean.shape).astype(np.float32)
            samples.append(posterior.sample(noise).numpy())
    samples = np.concatenate(samples)
    return {"scaling_factor": 1.0, "latents_mean": [float(v) for v in samples.mean(axis=(0, 2, 3))],
            "latents_std": [float(v) for v in samples.std(axis=(0, 2, 3))]}


def diffusion_trainer(run_dir: str | Path, config: TrainConfig, init_from: str | Path | None = None) -> Trainer:
    """``init_from``: a pipeline folder (e.g. the shipped embedded model) whose UNet and text encoder
    weights replace the random initialisation; the optimizer starts fresh. A checkpoint in the run
    folder still wins when resuming. ``config.unet_config``: the UNet's architecture when it is not
    the embedded one (with ``init_from``, that UNet grows into it: models.grow_unet); give it to
    ``export`` of the run too."""
    run_dir = Path(run_dir)
    vae = _trained_vae(run_dir / "vae_model")
    if init_from is None:
        unet = build_network("unet", EMBEDDED_DIR, seed=config.seed, config_file=config.unet_config or None)
        text_encoder = build_network("text_encoder", EMBEDDED_DIR, seed=config.seed + 1)
    else:
        text_encoder = NETWORKS["text_encoder"].from_pretrained(Path(init_from) / "text_encoder")
        unet = (grow_unet(Path(init_from) / "unet", config.unet_config, config.seed) if config.unet_config
                else NETWORKS["unet"].from_pretrained(Path(init_from) / "unet"))
    reader = None
    if config.reading_weight > 0:
        reader = _scene_reader(text_encoder, config.seed, init_from)
    schedule = NoiseSchedule.from_scheduler_config(read_json(EMBEDDED_DIR / "scheduler" / "scheduler_config.json"))
    task = DiffusionTask(unet, text_encoder, vae, load_tokenizer(EMBEDDED_DIR), schedule,
                         diffusion_data(config), seed=config.seed,
                         caption_dropout=config.caption_dropout, latent_reuse=config.latent_reuse,
                         train_text_encoder=config.train_text_encoder, snr_gamma=config.snr_gamma,
                         noise_offset=config.noise_offset, reader=reader, reading_weight=config.reading_weight,
                         binding_weight=config.binding_weight, binding_min_timestep=config.binding_min_timestep,
                         leak_weight=config.leak_weight, background_leak_weight=config.background_leak_weight,
                         leak_position_words=config.leak_position_words, object_weight=config.object_weight)
    return Trainer(task, config, run_dir / "diffusion")


def _scene_reader(text_encoder, seed: int, init_from: str | Path | None = None) -> SceneReader:
    """A fresh reader, or ``init_from``'s (written by the text-reading stage) when it has one."""
    paddle.seed(seed + 2)
    reader = SceneReader(text_encoder.config.hidden_size)
    weights = Path(init_from) / READER_FILE if init_from is not None else None
    if weights is not None and weights.is_file():
        reader.set_state_dict(paddle.load(str(weights)))
    return reader


def text_reading_trainer(run_dir: str | Path, config: TrainConfig, init_from: str | Path | None = None) -> Trainer:
    """Train ``init_from``'s text encoder (default: the shipped one) to read captions back into scenes."""
    source = Path(init_from) if init_from is not None else EMBEDDED_DIR
    text_encoder, anchor = (NETWORKS["text_encoder"].from_pretrained(source / "text_encoder") for _ in range(2))
    task = TextReadingTask(text_encoder, _scene_reader(text_encoder, config.seed), load_tokenizer(source),
                           diffusion_data(config), anchor=anchor, anchor_weight=config.anchor_weight)
    return Trainer(task, config, Path(run_dir) / "reading")


def train_text_reading(run_dir: str | Path, config: TrainConfig, init_from: str | Path | None = None,
                       progress: bool = True) -> Path:
    """Run the stage, then write ``run_dir/reading_model``: a copy of the ``init_from`` pipeline whose text
    encoder is the trained one (EMA, float32), with the reader in ``scene_reader/``: the diffusion stage's
    ``--init-from`` for ``--reading-weight``."""
    trainer = text_reading_trainer(run_dir, config, init_from)
    trainer.resume()
    trainer.run(progress=progress)
    out = Path(run_dir) / "reading_model"
    shutil.copytree(Path(init_from) if init_from is not None else EMBEDDED_DIR, out, dirs_exist_ok=True)
    trainer.ema.copy_to(trainer.layers)
    save_network(trainer.task.text_encoder, out / "text_encoder", fp16=False, extra_config=CONFIG_EXTRAS["text_encoder"])
    _save_reader(trainer.task.reader, out)
    print("held-out captions read back:", reading_accuracy(trainer.task, config.seed))
    return out


def reading_accuracy(task: TextReadingTask, seed: int, batches: int = 4, batch_size: int = 128) -> dict[str, float]:
    """Per-field accuracy of reading held-out captions (the evaluation frames and combinations) back into scenes."""
    data = SceneData(batch_size, seed + 7, split="eval", kinds=DIFFUSION_KINDS)
    held_out = TextReadingTask(task.text_encoder, task.reader, task.tokenizer, data)
    task.text_encoder.eval(), task.reader.eval()
    sums: dict[str, list[float]] = {}
    with paddle.no_grad():
        for index in range(batches):
            held_out.loss(index)
            for name, value in held_out.last_parts.items():
                sums.setdefault(name, []).append(value)
    return {name: round(float(np.mean(values)), 4) for name, values in sums.items()}


def diffusion_data(config: TrainConfig) -> SceneData:
    """Scenes for the diffusion stage, drawn so that each kind fills about DIFFUSION_KINDS of the slots
    (count scenes ``config.count_share`` of the draws when it is > 0; the others share the rest in their
    own ratio) and in the styles of ``_style_weights``."""
    kinds = dict(DIFFUSION_KINDS)
    if config.count_share > 0:
        kinds = with_share(kinds, "count", config.count_share)
    if config.twins:
        # every drawn pair brings its twin; a single or count scene does when it names a background
        # (~1 in 6 of them: sampling.BACKGROUND_PROBABILITY of the scenes not in ink)
        kinds["pair"] /= 2
    return SceneData(config.batch_size, config.seed, kinds=kinds, twins=config.twins,
                     styles=_style_weights(config))


def _style_weights(config: TrainConfig) -> dict | None:
    """sampling.STYLE_WEIGHTS with ``config.favoured_style`` drawn ``config.style_share`` of the time (None: as
    they always were drawn)."""
    return with_share(STYLE_WEIGHTS, config.favoured_style, config.style_share) if config.style_share > 0 else None


def train_diffusion(run_dir: str | Path, config: TrainConfig, until: int | None = None, progress: bool = True,
                    init_from: str | Path | None = None) -> int:
    trainer = diffusion_trainer(run_dir, config, init_from)
    trainer.resume()
    return trainer.run(until, progress=progress)


def export_embedded(run_dir: str | Path, config: TrainConfig, out_dir: str | Path,
                    vae_dir: str | Path | None = None) -> dict[str, int]:
    """The newest diffusion checkpoint's EMA weights + the trained VAE -> a pipeline folder (fp16).

    ``vae_dir``: ship this VAE instead of ``run_dir/vae_model`` (e.g. ``vae_decoder_model``); its encoder
    and latent statistics must be those the diffusion model was trained with, or it is refused."""
    trainer = diffusion_trainer(run_dir, config)
    step = trainer.resume()
    if step == 0:
        raise FileNotFoundError(f"no diffusion checkpoint in {Path(run_dir) / 'diffusion'}")
    # the trained networks' own architectures (a grown UNet is not the embedded folder's)
    unet, text_encoder = (NETWORKS[name].from_config(getattr(trainer.task, name).config.to_dict())
                          for name in ("unet", "text_encoder"))
    trainer.ema.copy_to({"unet": unet, "text_encoder": text_encoder})
    vae = trainer.task.vae
    if vae_dir is not None:
        vae = AutoencoderKL.from_pretrained(vae_dir)
        _check_same_latents(trainer.task.vae, vae, vae_dir)
    sizes = export_pipeline(out_dir, {"unet": unet, "vae": vae, "text_encoder": text_encoder})
    if "scene_reader" in trainer.layers:
        # not used for generating; kept so that a later run --init-from this folder goes on with the trained
        # reader instead of a random one pulling the text encoder about (runs are lost with their machines)
        reader = SceneReader(text_encoder.config.hidden_size)
        trainer.ema.copy_to({"scene_reader": reader})
        sizes["scene_reader"] = _save_reader(reader, Path(out_dir)).stat().st_size
    return sizes


def export_with_vae(model_dir: str | Path, vae_dir: str | Path, out_dir: str | Path) -> int:
    """The pipeline folder ``model_dir`` with the VAE of ``vae_dir`` (e.g. the vae-decoder stage's
    ``vae_decoder_model``) instead of its own, written to the new folder ``out_dir`` (fp16, like ``export``);
    returns the VAE's bytes. Only the decoder may differ: the UNet's latents are the encoder's."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_new_folder(out_dir, "pipeline")      # model_dir itself is not empty, so it is refused too
    check_pipeline_folders(model_dir)
    own = _trained_vae(model_dir / "vae")
    other = _trained_vae(Path(vae_dir), " or the 'vae-decoder' stage")
    _check_same_latents(own, other, vae_dir)
    with staged_folder(out_dir) as partial:                  # no half-written pipeline under out_dir
        shutil.copytree(model_dir, partial)
        return save_network(other, partial / "vae", fp16=True, extra_config=CONFIG_EXTRAS["vae"])


def _save_reader(reader: SceneReader, folder: Path) -> Path:
    """Where ``_scene_reader`` finds it when a run starts ``--init-from`` this folder."""
    path = folder / READER_FILE
    path.parent.mkdir(exist_ok=True)
    paddle.save(reader.state_dict(), str(path))
    return path


def _check_same_latents(trained_with: AutoencoderKL, other: AutoencoderKL, where) -> None:
    ours, theirs = trained_with.state_dict(), other.state_dict()
    for key, value in ours.items():
        if key.split(".")[0] in DECODER_PARTS:
            continue
        if key not in theirs or not np.array_equal(value.numpy(), theirs[key].numpy()):
            raise ValueError(f"the VAE in {where} has a different encoder ({key}) from the one the diffusion "
                             "model was trained with; only its decoder may differ")
    for name in ("latents_mean", "latents_std", "scaling_factor"):
        if getattr(trained_with.config, name) != getattr(other.config, name):
            raise ValueError(f"the VAE in {where} has a different {name} from the one the diffusion model was "
                             "trained with")


def finetune(model_dir: str | Path, data_dir: str | Path, run_dir: str | Path, config: TrainConfig,
             resolution: int | None = None, progress: bool = True) -> Trainer:
    """Fine-tune a loaded pipeline (the embedded one or a full-size one) on a folder + metadata.jsonl."""
    from ..pipelines.loading import load_components

    off = {"reading_weight": 0, "binding_weight": 0, "leak_weight": 0, "background_leak_weight": 0, "object_weight": 1,
           "count_share": 0, "style_share": 0}
    for name, neutral in off.items():
        if getattr(config, name) != neutral:   # each needs the scene a picture shows; a user's folder has none
            raise ValueError(f"{name} is for the embedded model's scene data; fine-tuning on a folder of pictures "
                             f"cannot use it (leave it at {neutral})")

    parts = load_components(model_dir)
    vae, unet = parts["vae"], parts["unet"]
    resolution = resolution or unet.config.sample_size * vae.downscale_factor
    scheduler_config = read_json(Path(model_dir) / "scheduler" / "scheduler_config.json")
    task = DiffusionTask(unet, parts["text_encoder"], vae, parts["tokenizer"],
                         NoiseSchedule.from_scheduler_config(scheduler_config),
                         FolderData(data_dir, config.batch_size, resolution, config.seed), seed=config.seed,
                         caption_dropout=config.caption_dropout, latent_reuse=config.latent_reuse,
                         train_text_encoder=config.train_text_encoder, snr_gamma=config.snr_gamma,
                         noise_offset=config.noise_offset)
    trainer = Trainer(task, config, run_dir)
    trainer.resume()
    trainer.run(progress=progress)
    return trainer


def export_finetuned(trainer: Trainer, model_dir: str | Path, out_dir: str | Path, fp16: bool = False) -> dict:
    """The fine-tuned EMA weights written as a pipeline folder next to the original's other parts."""
    import copy

    networks = {}
    for name, layer in trainer.layers.items():
        fresh = copy.deepcopy(layer)
        trainer.ema.copy_to({name: fresh})
        networks[name] = fresh
    networks.setdefault("vae", trainer.task.vae)
    networks.setdefault("text_encoder", trainer.task.text_encoder)
    return export_pipeline(out_dir, networks, template=model_dir, fp16=fp16)
