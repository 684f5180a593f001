"""What one training step computes: the VAE's reconstruction loss or the UNet's noise-prediction loss.

A task holds the networks and a data source and maps a step number to a scalar loss. All randomness
of a step (noise, timesteps, caption dropout, posterior samples) comes from
``np.random.default_rng([seed, step, purpose])``, so step k computes the same thing whether or not
the run was interrupted before it.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..models.vae import to_diffusion_latents
from .attention_maps import BindingTargets, CrossAttentionRecorder, binding_loss, cells_mask, leak_loss
from .noise import NoiseSchedule, training_noise

# ``purpose`` numbers that keep the per-step random streams apart
_VAE_NOISE, _DIFFUSION_STEP, _POSTERIOR = 1, 2, 3
#: the VAE's layers after the latent: what a decoder-only fine-tune trains and may change
DECODER_PARTS = ("decoder", "post_quant_conv")


class VAETask:
    """Reconstruction (L1 + L2, per-element means) + ``kl_weight`` * KL (per-sample sum / elements).

    ``crop`` trains on random ``crop`` x ``crop`` windows (corners on the 8-pixel grid, so pixel-style
    blocks stay aligned with latent cells): the networks are convolutional, and a 64-pixel window
    costs a quarter of the full 128-pixel image.

    ``train_encoder=False`` fine-tunes the decoder side only (``post_quant_conv`` + ``decoder``), as
    Stability did for sd-vae-ft-mse: the encoder, and so every latent a diffusion model was trained on,
    stays bit for bit the same, and the KL term (a function of the encoder alone) is left out.
    """

    def __init__(self, vae: nn.Layer, data, kl_weight: float, seed: int, crop: int | None = None,
                 train_encoder: bool = True, edge_weight: float = 0.0):
        self.vae, self.data, self.kl_weight, self.seed = vae, data, float(kl_weight), int(seed)
        self.edge_weight = float(edge_weight)
        self.crop = crop
        self.train_encoder = bool(train_encoder)
        if not self.train_encoder:
            for p in self.vae.parameters():
                p.stop_gradient = True
            for layer in self.trainable.values():
                for p in layer.parameters():
                    p.stop_gradient = False
        self.last_parts: dict[str, float] = {}

    @property
    def trainable(self) -> dict[str, nn.Layer]:
        if self.train_encoder:
            return {"vae": self.vae}
        parts = {name: getattr(self.vae, name) for name in DECODER_PARTS}
        return {name: layer for name, layer in parts.items() if layer is not None}

    def loss(self, step: int) -> paddle.Tensor:
        images, _ = self.data.batch(step)
        rng = np.random.default_rng([self.seed, step, _VAE_NOISE])
        if self.crop:
            images = _random_crops(images, self.crop, rng)
        x = paddle.to_tensor(images)
        with paddle.set_grad_enabled(self.train_encoder):
            posterior = self.vae.encode(x)
        noise = rng.standard_normal(posterior.mean.shape).astype(np.float32)
        reconstruction = self.vae.decode(posterior.sample(noise))
        l1 = F.l1_loss(reconstruction, x)
        l2 = F.mse_loss(reconstruction, x)
        self.last_parts = {"l1": float(l1), "l2": float(l2)}
        total = l1 + l2
        if self.edge_weight:
            edges = edge_loss(reconstruction, x)
            self.last_parts["edge"] = float(edges)
            total = total + self.edge_weight * edges
        if not self.train_encoder:
            return total
        kl = posterior.kl().mean() / float(np.prod(images.shape[1:]))
        self.last_parts["kl"] = float(kl) * float(np.prod(images.shape[1:]))
        return total + self.kl_weight * kl


def edge_loss(reconstruction: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
    """Mean L1 distance between the horizontal and vertical neighbour differences of two NCHW images.

    Why: a scene is mostly flat background, so per-pixel L1/L2 barely notice an outline drawn as a
    blur; on a coloured background the decoder drew stars and triangles as rounded blobs with dark
    rims (shape 54 % on the reconstructions of the 37 such evaluation scenes, 98 % on the others). Flat
    regions have zero differences, so this term only looks at edges. It is close to the gradient
    difference loss of Mathieu et al. (ICLR 2016, eq. 5, exponent 1), which compares the differences'
    magnitudes; comparing them signed also counts an edge of the wrong polarity, such as a dark rim."""
    def differences(image):
        return image[:, :, :, 1:] - image[:, :, :, :-1], image[:, :, 1:, :] - image[:, :, :-1, :]
    (rx, ry), (tx, ty) = differences(reconstruction), differences(target)
    return F.l1_loss(rx, tx) + F.l1_loss(ry, ty)


def _random_crops(images: np.ndarray, size: int, rng: np.random.Generator, grid: int = 8,
                  object_share: float = 0.75) -> np.ndarray:
    """Grid-aligned ``size`` windows; ``object_share`` of them centred near a random foreground pixel
    (one far from the border's median colour), since most of a scene is flat background."""
    _, _, h, w = images.shape
    if size > min(h, w) or size % grid:
        raise ValueError(f"crop {size} must be a multiple of {grid} and at most the image size {h}x{w}")
    crops = []
    for image in images:
        top = int(rng.integers(0, (h - size) // grid + 1)) * grid
        left = int(rng.integers(0, (w - size) // grid + 1)) * grid
        if rng.random() < object_share:
            border = np.concatenate([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], axis=1)
            distance = np.abs(image - np.median(border, axis=1)[:, None, None]).sum(0)
            ys, xs = np.nonzero(distance > 0.3)
            if len(ys):
                k = int(rng.integers(len(ys)))
                top = int(np.clip(round((ys[k] - size / 2) / grid), 0, (h - size) // grid)) * grid
                left = int(np.clip(round((xs[k] - size / 2) / grid), 0, (w - size) // grid)) * grid
        crops.append(image[:, top:top + size, left:left + size])
    return np.stack(crops)


class DiffusionTask:
    """Noise prediction on VAE latents, conditioned on the text encoder's embeddings of the captions."""

    def __init__(self, unet: nn.Layer, text_encoder: nn.Layer, vae: nn.Layer, tokenizer, schedule: NoiseSchedule,
                 data, *, seed: int, caption_dropout: float = 0.1, latent_reuse: int = 1,
                 train_text_encoder: bool = True, max_length: int | None = None, snr_gamma: float = 0.0,
                 noise_offset: float = 0.0, reader: nn.Layer | None = None, reading_weight: float = 0.0,
                 binding_weight: float = 0.0, binding_min_timestep: int = 0, leak_weight: float = 0.0,
                 background_leak_weight: float = 0.0, leak_position_words: bool = False,
                 object_weight: float = 1.0):
        """``reader`` (a ``scene_reader.SceneReader``) with ``reading_weight`` > 0 adds that times its scene-reading
        loss on the captions' encodings (the ones not dropped), so the text encoder keeps binding words while the
        UNet learns to use it; the data must then know its scenes (``SceneData``).

        ``binding_weight`` > 0 adds that times the cross-attention binding loss (``attention_maps.binding_loss``):
        each object word's attention should fall in its object's cells; it too needs scene data. Only samples
        noised to ``binding_min_timestep`` or more count: at lower noise the latents show where each colour
        is, so the maps can find "red" by its pixels instead of by its place (run 7, docs/embedded_model.md),
        while at sampling time the layout is decided in the first, noisiest steps. ``leak_weight`` > 0 adds that
        times ``attention_maps.leak_loss`` (how much of an object's cells' attention goes to the other object's
        words) on the same samples, ``background_leak_weight`` > 0 that times ``leak_loss(background=True)`` (the
        object words' share against the background's colour word in the cells no object holds); with
        ``leak_position_words`` the leak loss counts an object's position words among its words.

        ``object_weight`` != 1 weighs the denoising error at the latent positions in the objects' cells that many
        times the rest (``object_weights``): on a 16x16 latent the objects cover a fifth of the positions, so the
        flat background dominates a plain mean, while the shapes and colours are what the images get wrong."""
        self.unet, self.text_encoder, self.vae, self.tokenizer = unet, text_encoder, vae, tokenizer
        self.schedule, self.data, self.seed = schedule, data, int(seed)
        self.caption_dropout, self.latent_reuse = float(caption_dropout), int(latent_reuse)
        self.train_text_encoder = bool(train_text_encoder)
        self.snr_gamma, self.noise_offset = float(snr_gamma), float(noise_offset)
        self.max_length = int(max_length or tokenizer.model_max_length)
        self.reader, self.reading_weight = reader, float(reading_weight)
        if self.reading_weight > 0 and (reader is None or not hasattr(data, "scenes")):
            raise ValueError("reading_weight > 0 needs a scene reader and scene data that knows its scenes")
        self.binding_weight, self.binding_min_timestep = float(binding_weight), int(binding_min_timestep)
        self.leak_weight, self.background_leak_weight = float(leak_weight), float(background_leak_weight)
        self.leak_position_words = bool(leak_position_words)
        self.object_weight = float(object_weight)
        if self.object_weight != 1.0 and not hasattr(data, "scenes"):
            raise ValueError("object_weight != 1 needs scene data that knows where its objects are")
        self.recorder = None
        if self.binding_weight > 0 or self.leak_weight > 0 or self.background_leak_weight > 0:
            if not hasattr(data, "scenes"):
                raise ValueError("binding_weight / leak_weight / background_leak_weight > 0 need scene data that "
                                 "knows where its objects are")
            self.recorder = CrossAttentionRecorder(unet, detach=False)
        self.vae.eval()
        for p in self.vae.parameters():
            p.stop_gradient = True
        if not self.train_text_encoder:
            for p in self.text_encoder.parameters():
                p.stop_gradient = True
        self._cached: tuple[int, paddle.Tensor, list[str]] | None = None
        self.last_parts: dict[str, float] = {}

    @property
    def trainable(self) -> dict[str, nn.Layer]:
        layers = {"unet": self.unet}
        if self.train_text_encoder:
            layers["text_encoder"] = self.text_encoder
        if self.reading_weight > 0:
            layers["scene_reader"] = self.reader
        return layers

    def latents_and_captions(self, step: int) -> tuple[paddle.Tensor, list[str]]:
        index, variant = divmod(step, self.latent_reuse)
        if self._cached is None or self._cached[0] != index:
            images, _ = self.data.batch(index)
            with paddle.no_grad():
                posterior = self.vae.encode(paddle.to_tensor(images))
                rng = np.random.default_rng([self.seed, index, _POSTERIOR])
                noise = rng.standard_normal(posterior.mean.shape).astype(np.float32)
                latents = to_diffusion_latents(self.vae.config, posterior.sample(noise))
            self._cached = (index, latents)
        captions = self._captions(index, variant)
        return self._cached[1], captions

    def _captions(self, index: int, variant: int) -> list[str]:
        if hasattr(self.data, "captions"):
            return self.data.captions(index, variant)   # fresh wording of the same scenes
        return self.data.batch(index)[1]

    def loss(self, step: int) -> paddle.Tensor:
        latents, captions = self.latents_and_captions(step)
        rng = np.random.default_rng([self.seed, step, _DIFFUSION_STEP])
        batch = latents.shape[0]
        dropped = rng.random(batch) < self.caption_dropout
        captions = ["" if drop else text for text, drop in zip(captions, dropped)]
        timesteps = rng.integers(0, self.schedule.num_train_timesteps, batch)
        noise = paddle.to_tensor(training_noise(rng, latents.shape, self.noise_offset))
        noisy = self.schedule.add_noise(latents, noise, timesteps)
        context = self.encode_text(captions)
        if self.recorder is not None:
            self.recorder.clear()
        prediction = self.unet(noisy, paddle.to_tensor(timesteps.astype(np.float32)), context)
        target = self.schedule.target(latents, noise, timesteps)
        uses_scenes = self.object_weight != 1.0 or self.reading_weight > 0 or self.recorder is not None
        scenes = self.data.scenes(step // self.latent_reuse)[0] if uses_scenes else None
        positions = None
        if self.object_weight != 1.0:
            positions = paddle.to_tensor(object_weights(scenes, latents.shape[-1], self.object_weight))
        per_sample = weighted_mse(prediction, target, positions)
        if self.snr_gamma <= 0:
            loss = per_sample.mean()
        else:
            weights = self.schedule.min_snr_weights(timesteps, self.snr_gamma).astype(np.float32)
            loss = (per_sample * paddle.to_tensor(weights)).mean()
        if self.reading_weight <= 0 and self.recorder is None:
            return loss
        self.last_parts = {"denoising": float(loss)}
        if self.recorder is not None:
            noisy_enough = [text if t >= self.binding_min_timestep else "" for text, t in zip(captions, timesteps)]
            targets = BindingTargets(self.tokenizer, scenes, noisy_enough, context.shape[1],
                                     position_words=self.leak_position_words)
            if self.binding_weight > 0 and not targets.empty:
                binding = binding_loss(self.recorder.maps, targets)
                self.last_parts["binding"] = float(binding)
                loss = loss + self.binding_weight * binding
            if self.leak_weight > 0 and targets.has_rivals:
                leak = leak_loss(self.recorder.maps, targets)
                self.last_parts["leak"] = float(leak)
                loss = loss + self.leak_weight * leak
            if self.background_leak_weight > 0 and targets.has_background:
                leak = leak_loss(self.recorder.maps, targets, background=True)
                self.last_parts["background_leak"] = float(leak)
                loss = loss + self.background_leak_weight * leak
            self.recorder.clear()
        if self.reading_weight <= 0 or dropped.all():   # no caption to read back
            return loss
        kept = np.nonzero(~dropped)[0]
        reading, accuracy = self.reader.loss(paddle.gather(context, paddle.to_tensor(kept)), [scenes[i] for i in kept])
        self.last_parts.update({"reading": float(reading), **{f"read_{k}": v for k, v in accuracy.items()}})
        return loss + self.reading_weight * reading

    def encode_text(self, captions: list[str]) -> paddle.Tensor:
        return encode_captions(self.text_encoder, self.tokenizer, captions, self.max_length)


def object_weights(scenes, side: int, weight: float) -> np.ndarray:
    """[B, 1, side, side] float32: ``weight`` at the latent positions in each scene's objects' cells, 1 elsewhere
    (a soft form of the masked diffusion loss of Break-A-Scene, Avrahami et al. 2023, with the renderer's cells
    as the masks)."""
    inside = np.stack([cells_mask([o.cell for o in scene.objects], side) for scene in scenes])
    return np.where(inside, weight, 1.0).astype(np.float32).reshape(len(scenes), 1, side, side)


def weighted_mse(prediction: paddle.Tensor, target: paddle.Tensor, positions: paddle.Tensor | None) -> paddle.Tensor:
    """[B] squared error per sample: the plain mean, or weighted by ``positions`` [B, 1, H, W] (the weights are
    divided by their mean per sample, so each sample's loss keeps the plain mean's scale)."""
    error = (prediction - target) ** 2
    if positions is None:
        return error.mean(axis=[1, 2, 3])
    return (error * positions).mean(axis=[1, 2, 3]) / positions.mean(axis=[1, 2, 3])


def encode_captions(text_encoder: nn.Layer, tokenizer, captions: list[str], max_length: int) -> paddle.Tensor:
    tokens = tokenizer(captions, max_length=max_length, padding="max_length", truncation=True)
    # the pipelines pass the mask only to encoders whose config says use_attention_mask (diffusers' rule)
    wants_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
    mask = tokens["attention_mask"] if wants_mask else None
    return text_encoder.encode(tokens["input_ids"], mask)


class TextReadingTask:
    """Train the text encoder (with a ``SceneReader``) to read captions back into their scenes.

    ``anchor`` (a frozen copy of the encoder the UNet was trained with) adds ``anchor_weight`` times the
    mean squared distance of the encodings to it, so the encodings gain what binding needs while staying
    close enough to the old ones for the UNet to keep working from its first step on them."""

    def __init__(self, text_encoder: nn.Layer, reader: nn.Layer, tokenizer, data, *, anchor: nn.Layer | None = None,
                 anchor_weight: float = 0.0, max_length: int | None = None):
        self.text_encoder, self.reader, self.tokenizer, self.data = text_encoder, reader, tokenizer, data
        self.anchor, self.anchor_weight = anchor, float(anchor_weight)
        if self.anchor_weight > 0 and anchor is None:
            raise ValueError("anchor_weight > 0 needs the anchor encoder")
        if anchor is not None:
            anchor.eval()
            for p in anchor.parameters():
                p.stop_gradient = True
        self.max_length = int(max_length or tokenizer.model_max_length)
        self.last_parts: dict[str, float] = {}

    @property
    def trainable(self) -> dict[str, nn.Layer]:
        return {"text_encoder": self.text_encoder, "scene_reader": self.reader}

    def loss(self, step: int) -> paddle.Tensor:
        scenes, captions = self.data.scenes(step)[0], self.data.captions(step, 0)
        encoded = encode_captions(self.text_encoder, self.tokenizer, captions, self.max_length)
        loss, accuracy = self.reader.loss(encoded, scenes)
        self.last_parts = {"reading": float(loss), **{f"read_{k}": v for k, v in accuracy.items()}}
        if self.anchor_weight > 0:
            with paddle.no_grad():
                old = encode_captions(self.anchor, self.tokenizer, captions, self.max_length)
            drift = F.mse_loss(encoded, old)
            self.last_parts["drift"] = float(drift)
            loss = loss + self.anchor_weight * drift
        return loss
