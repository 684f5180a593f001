"""Text-to-image, image-to-image and inpainting over one set of components, as diffusers' SD pipelines.

One denoising loop serves all three; it never asks which scheduler it holds (diffusers' contract:
``set_timesteps``, ``scale_model_input``, ``step``). Randomness comes from per-image generators
(``noise.py``), so an image depends on its own seed only, whatever the batch size.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from . import images as image_io
from .defaults import GenerationDefaults
from .metadata import GenerationParams
from .noise import as_generators, batch_noise, generators_for, seeds_for
from .prompts import encode_chunks, tokenize_prompt
from ..models.vae import from_diffusion_latents, to_diffusion_latents
from ..schedulers import make_scheduler, scheduler_name

MAX_STEPS = 1000
OUTPUT_TYPES = ("pil", "numpy", "np", "latent")

#: callback(step_index, timestep, latents) -> False to stop early (anything else continues)
StepCallback = Callable[[int, Any, paddle.Tensor], Any]


@dataclasses.dataclass
class PipelineOutput:
    """``images``: PIL images, a float [B, H, W, 3] array in [0, 1] ("numpy") or latents ("latent")."""

    images: Any
    params: list[GenerationParams]
    #: the step after which a callback stopped the run, or None if all steps ran
    stopped_at: int | None = None

    def save(self, folder, prefix: str = "image") -> list:
        """Write each PIL image as a PNG carrying its generation parameters (atomically)."""
        from pathlib import Path
        from .metadata import save_png
        if not (isinstance(self.images, list) and all(isinstance(im, Image.Image) for im in self.images)):
            raise ValueError("only PIL outputs (output_type='pil') can be saved as PNG")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [save_png(im, folder / f"{prefix}-{p.seed}-{i}.png", p)
                for i, (im, p) in enumerate(zip(self.images, self.params))]


class StableDiffusionPipeline:
    """Holds the components; ``__call__`` is text-to-image, ``img2img`` and ``inpaint`` the others."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, model_name: str = "",
                 scheduler_config: dict | None = None, generation_defaults: GenerationDefaults | None = None):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.model_name = model_name
        # the model's scheduler_config.json as read: other samplers chosen per call start from it, as
        # diffusers' ``OtherScheduler.from_config(pipe.scheduler.config)`` does
        self.scheduler_config = scheduler_config or scheduler.config_dict()
        # what num_inference_steps / guidance_scale=None mean: the model's recommendation (defaults.py)
        self.generation_defaults = generation_defaults or GenerationDefaults()
        for layer in (unet, vae, text_encoder):
            layer.eval()

    @classmethod
    def from_pretrained(cls, folder, scheduler: str | None = None) -> "StableDiffusionPipeline":
        """A diffusers pipeline folder or a Paddle folder written by ``convert``."""
        from .loading import load_components
        return cls(**load_components(folder, scheduler))

    # ------------------------------------------------------------------ public entry points
    def __call__(self, prompt, negative_prompt=None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 num_images_per_prompt: int = 1, seed=None, generator=None, latents=None, eta: float = 0.0,
                 scheduler=None, output_type: str = "pil", callback: StepCallback | None = None,
                 progress: bool = True, clip_skip: int | None = None, guidance_rescale: float = 0.0) -> PipelineOutput:
        sample = self.unet.config.sample_size * self.vae_scale_factor
        height, width = (sample if height is None else height), (sample if width is None else width)
        run = self._prepare(prompt, negative_prompt, height, width, num_inference_steps,
                            guidance_scale, num_images_per_prompt, seed, generator, eta, scheduler,
                            output_type, clip_skip, guidance_rescale=guidance_rescale)
        scheduler = run.scheduler
        scheduler.set_timesteps(run.steps)
        shape = self._latent_shape(run)
        if latents is None:
            start = batch_noise(run.generators, shape)
        else:
            start = _latents(latents, [run.batch, *shape])
        start = start * scheduler.init_noise_sigma
        return self._denoise_and_decode(run, start, scheduler.timesteps, callback, progress)

    def img2img(self, prompt, image, strength: float = 0.8, negative_prompt=None, height: int | None = None,
                width: int | None = None, num_inference_steps: int | None = None,
                guidance_scale: float | None = None, num_images_per_prompt: int = 1, seed=None, generator=None,
                eta: float = 0.0, scheduler=None, output_type: str = "pil", callback: StepCallback | None = None,
                progress: bool = True, clip_skip: int | None = None, guidance_rescale: float = 0.0) -> PipelineOutput:
        init = image_io.fit(image_io.load_image(image), width, height, self.size_multiple)
        run = self._prepare(prompt, negative_prompt, init.height, init.width, num_inference_steps, guidance_scale,
                            num_images_per_prompt, seed, generator, eta, scheduler, output_type, clip_skip,
                            strength=strength, guidance_rescale=guidance_rescale)
        scheduler = run.scheduler
        scheduler.set_timesteps(run.steps)
        timesteps = scheduler.img2img_timesteps(_strength(strength))
        if len(timesteps) == 0:
            raise ValueError(f"strength={strength} with {run.steps} steps leaves no step to run")
        image_latents = self._encode_images(init, run)
        noise = batch_noise(run.generators, self._latent_shape(run))
        start = scheduler.add_noise(image_latents, noise, np.repeat(timesteps[:1], run.batch))
        return self._denoise_and_decode(run, start, timesteps, callback, progress)

    def inpaint(self, prompt, image, mask_image, strength: float = 1.0, negative_prompt=None,
                height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                guidance_scale: float | None = None, num_images_per_prompt: int = 1, seed=None, generator=None,
                latents=None, eta: float = 0.0, scheduler=None, output_type: str = "pil",
                callback: StepCallback | None = None, progress: bool = True,
                clip_skip: int | None = None, guidance_rescale: float = 0.0) -> PipelineOutput:
        """Repaint the white part of ``mask_image``. A 9-channel UNet sees the mask and the masked image;
        a 4-channel one gets the known region blended back after every step (diffusers' two paths)."""
        init = image_io.fit(image_io.load_image(image), width, height, self.size_multiple)
        mask = image_io.load_image(mask_image, "L")
        if mask.size != init.size:
            raise ValueError(f"mask_image is {mask.width}x{mask.height} but the image is {init.width}x{init.height}")
        run = self._prepare(prompt, negative_prompt, init.height, init.width, num_inference_steps, guidance_scale,
                            num_images_per_prompt, seed, generator, eta, scheduler, output_type, clip_skip,
                            strength=strength, guidance_rescale=guidance_rescale)
        channels = self.unet.config.in_channels
        if channels not in (4, 9):
            raise ValueError(f"inpainting needs a 4- or 9-channel UNet, this one has {channels} input channels")
        scheduler = run.scheduler
        scheduler.set_timesteps(run.steps)
        timesteps = scheduler.img2img_timesteps(_strength(strength))
        if len(timesteps) == 0:
            raise ValueError(f"strength={strength} with {run.steps} steps leaves no step to run")
        full_strength = strength == 1.0
        mask_full = image_io.mask_to_tensor([mask])
        image_tensor = image_io.to_tensor([init])
        # the same draw order per generator as diffusers: image latents (if needed), noise, masked-image latents
        image_latents = None
        if channels == 4 or (latents is None and not full_strength):
            image_latents = self._encode_images(init, run)
        shape = self._latent_shape(run)
        if latents is not None:
            noise = _latents(latents, [run.batch, *shape])
            start = noise * scheduler.init_noise_sigma
        else:
            noise = batch_noise(run.generators, shape)
            start = (noise * scheduler.init_noise_sigma if full_strength else
                     scheduler.add_noise(image_latents, noise, np.repeat(timesteps[:1], run.batch)))
        mask_latent = F.interpolate(mask_full, size=shape[1:], mode="nearest").expand([run.batch, 1, *shape[1:]])
        blend = None
        if channels == 9:
            masked = self._encode_tensor(image_tensor * (mask_full < 0.5).astype("float32"), run)
            extra = paddle.concat([mask_latent, masked], axis=1)
            run.unet_extra = paddle.concat([extra, extra]) if run.guidance else extra
        else:
            blend = _Blend(scheduler, image_latents, noise, mask_latent, timesteps)
        return self._denoise_and_decode(run, start, timesteps, callback, progress, blend)

    # ------------------------------------------------------------------ shared machinery
    @property
    def vae_scale_factor(self) -> int:
        return self.vae.downscale_factor

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of 8 (SD's rule) and of the VAE's downscale factor."""
        return max(8, self.vae_scale_factor)

    def _prepare(self, prompt, negative_prompt, height, width, steps, guidance_scale, per_prompt, seed,
                 generator, eta, scheduler, output_type, clip_skip, strength=None, guidance_rescale=0.0) -> "_Run":
        steps, guidance_scale = self.generation_defaults.resolve(steps, guidance_scale)
        prompts = _texts(prompt, "prompt")
        negatives = _texts("" if negative_prompt is None else negative_prompt, "negative_prompt")
        if len(negatives) == 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        image_io.check_size(width, height, self.size_multiple)
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"num_inference_steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
        if not isinstance(per_prompt, (int, np.integer)) or per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {per_prompt!r}")
        if not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool):
            raise TypeError(f"guidance_scale must be a number, got {guidance_scale!r}")
        if isinstance(guidance_rescale, bool) or not isinstance(guidance_rescale, (int, float)) \
                or not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must be a number from 0 to 1 (0 = off), got {guidance_rescale!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        batch = len(prompts) * per_prompt
        if generator is not None:
            # a caller's own generators have no seed to record: -1, A1111's "random"
            seeds, generators = [-1] * batch, as_generators(generator, batch)
        else:
            seeds = seeds_for(seed, batch)
            generators = generators_for(seeds)
        sched = self._scheduler(scheduler)
        guidance = guidance_scale > 1.0
        cond, uncond = self._encode_prompts(prompts, negatives, clip_skip, guidance)
        cond = paddle.repeat_interleave(cond, per_prompt, axis=0)
        embeddings = cond
        if guidance:
            embeddings = paddle.concat([paddle.repeat_interleave(uncond, per_prompt, axis=0), cond])
        params = [GenerationParams(prompt=p, negative_prompt=n, steps=steps,
                                   sampler=scheduler_name(sched), cfg_scale=float(guidance_scale),
                                   seed=s, width=width, height=height, model=self.model_name,
                                   strength=strength, clip_skip=clip_skip, eta=eta or None,
                                   extra={"Guidance rescale": f"{guidance_rescale:g}"} if guidance_rescale else {})
                  for (p, n), s in zip([pn for pn in zip(prompts, negatives) for _ in range(per_prompt)], seeds)]
        return _Run(batch, height, width, generators, sched, guidance, float(guidance_scale), embeddings, eta,
                    output_type, params, int(steps), guidance_rescale=float(guidance_rescale))

    def _scheduler(self, choice):
        if choice is None:
            return self.scheduler
        if isinstance(choice, str):
            return make_scheduler(choice, base_config=self.scheduler_config)
        return choice

    def _encode_prompts(self, prompts, negatives, clip_skip, guidance):
        """[B, L, D] for the prompts and negatives, all padded to the same number of chunks."""
        chunks = [tokenize_prompt(self.tokenizer, p) for p in prompts]
        negative_chunks = [tokenize_prompt(self.tokenizer, n) for n in negatives] if guidance else []
        count = max(len(c) for c in chunks + negative_chunks)
        empty = tokenize_prompt(self.tokenizer, "")
        encode = lambda c: encode_chunks(self.text_encoder, c.padded_to(count, empty),
                                         clip_skip=clip_skip)
        with paddle.no_grad():
            cond = paddle.concat([encode(c) for c in chunks])
            uncond = paddle.concat([encode(c) for c in negative_chunks]) if guidance else None
        return cond, uncond

    def _latent_shape(self, run: "_Run") -> list[int]:
        f = self.vae_scale_factor
        return [self.vae.config.latent_channels, run.height // f, run.width // f]

    def _encode_images(self, image: Image.Image, run: "_Run") -> paddle.Tensor:
        return self._encode_tensor(image_io.to_tensor([image]), run)

    def _encode_tensor(self, images: paddle.Tensor, run: "_Run") -> paddle.Tensor:
        """One posterior sample per batch image, each from its own generator, in the UNet's latent space."""
        with paddle.no_grad():
            posterior = self.vae.encode(images)
        shape = list(posterior.mean.shape[1:])
        samples = [posterior.mean + posterior.std * batch_noise([g], shape) for g in run.generators]
        return to_diffusion_latents(self.vae.config, paddle.concat(samples))

    def _denoise_and_decode(self, run: "_Run", latents, timesteps, callback, progress, blend=None):
        scheduler, stopped_at = run.scheduler, None
        with paddle.no_grad():
            for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="denoising")):
                model_input = paddle.concat([latents, latents]) if run.guidance else latents
                model_input = scheduler.scale_model_input(model_input, t)
                if run.unet_extra is not None:
                    model_input = paddle.concat([model_input, run.unet_extra], axis=1)
                prediction = self.unet(model_input, t, run.embeddings)
                if run.guidance:
                    uncond, cond = prediction.chunk(2)
                    prediction = uncond + run.guidance_scale * (cond - uncond)
                    if run.guidance_rescale > 0:
                        prediction = rescale_guidance(prediction, cond, run.guidance_rescale)
                step_noise = batch_noise(run.generators, latents.shape[1:]) if _draws_noise(scheduler, run.eta) else None
                latents = scheduler.step(prediction, t, latents, noise=step_noise, eta=run.eta).prev_sample
                if blend is not None:
                    latents = blend(i, latents)
                if callback is not None and callback(i, t, latents) is False:
                    stopped_at = i
                    break
            if run.output_type == "latent":
                return PipelineOutput(latents.numpy(), run.params, stopped_at)
            decoded = self.vae.decode(from_diffusion_latents(self.vae.config, latents))
        pixels = image_io.to_uint8(decoded)
        if run.output_type == "pil":
            images = [Image.fromarray(p) for p in pixels]
        else:
            images = np.clip(decoded.numpy().transpose(0, 2, 3, 1) / 2.0 + 0.5, 0.0, 1.0)
        return PipelineOutput(images, run.params, stopped_at)


def rescale_guidance(guided: paddle.Tensor, cond: paddle.Tensor, phi: float) -> paddle.Tensor:
    """Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4 and Algorithm 2:
    scale the guided prediction back to the per-image standard deviation of the conditional one (a high guidance
    scale inflates it, which over-exposes), then mix the two by ``phi``. The standard deviation is over all of an
    image's elements with Bessel's correction, as diffusers' ``rescale_noise_cfg`` takes it with torch's ``std``."""
    axes = list(range(1, guided.ndim))
    rescaled = guided * (paddle.std(cond, axis=axes, keepdim=True) / paddle.std(guided, axis=axes, keepdim=True))
    return phi * rescaled + (1.0 - phi) * guided


@dataclasses.dataclass
class _Run:
    batch: int
    height: int
    width: int
    generators: list
    scheduler: Any
    guidance: bool
    guidance_scale: float
    embeddings: paddle.Tensor
    eta: float
    output_type: str
    params: list
    steps: int
    unet_extra: paddle.Tensor | None = None
    guidance_rescale: float = 0.0


class _Blend:
    """4-channel inpainting: after each step, put back the known region noised to the next step's level."""

    def __init__(self, scheduler, image_latents, noise, mask, timesteps):
        self.scheduler, self.image_latents, self.noise = scheduler, image_latents, noise
        self.mask, self.timesteps = mask, timesteps

    def __call__(self, i: int, latents: paddle.Tensor) -> paddle.Tensor:
        known = self.image_latents
        if i < len(self.timesteps) - 1:
            next_t = np.repeat(np.asarray(self.timesteps[i + 1:i + 2]), latents.shape[0])
            known = self.scheduler.add_noise(known, self.noise, next_t)
        return (1 - self.mask) * known + self.mask * latents


def call_arguments(params: GenerationParams) -> dict[str, Any]:
    """Keyword arguments of ``StableDiffusionPipeline.__call__`` that regenerate an image from its
    parameters (as read back by ``metadata.read_png_params``)."""
    if params.seed < 0:
        raise ValueError("these parameters record no seed (the image came from a caller's own generator)")
    return dict(prompt=params.prompt, negative_prompt=params.negative_prompt, num_inference_steps=params.steps,
                scheduler=params.sampler, guidance_scale=params.cfg_scale, seed=params.seed, width=params.width,
                height=params.height, eta=params.eta or 0.0, clip_skip=params.clip_skip)


def _draws_noise(scheduler, eta: float) -> bool:
    """Whether this step consumes fresh noise (ancestral samplers, DDPM, DDIM with eta > 0, LCM)."""
    uses = getattr(scheduler, "uses_step_noise", None)
    return bool(uses(eta)) if callable(uses) else False


def _texts(value, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{name} must be a string or a non-empty list of strings, got {value!r}")


def _strength(strength) -> float:
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
    return float(strength)


def _latents(value, shape: Sequence[int]) -> paddle.Tensor:
    array = np.asarray(value.numpy() if isinstance(value, paddle.Tensor) else value, dtype=np.float32)
    if list(array.shape) != list(shape):
        raise ValueError(f"latents must have shape {list(shape)}, got {list(array.shape)}")
    return paddle.to_tensor(array)
