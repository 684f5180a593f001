"""End-to-end parity: tiny random components in diffusers' SD pipelines and in ours, same numpy latents.

Criterion (issue 3): output images differ by at most 1/255 on at least 99.9 % of pixels.
Random draws that diffusers makes inside its pipelines (VAE posterior samples, img2img noise) are
replayed into ours through a generator object that draws from the same torch generator.
"""

import numpy as np
import paddle
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from conftest import CONFIGS, reference_config
from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline
from stable_diffusion_chinese.pipelines.metadata import to_a1111_text

SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpm++2m": "DPMSolverMultistepScheduler"}
# SD 1.5's scheduler settings (scheduler/scheduler_config.json of the SD 1.5 pipeline)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")
PROMPT = "a red circle 红色的圆形"


class TorchNormal:
    """A generator for our pipeline that replays a torch generator's normal draws."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def standard_normal(self, size):
        return torch.randn(tuple(size), generator=self.generator).numpy()


def randomise(module, scale=0.15):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module.eval()


@pytest.fixture(scope="module")
def reference_parts():
    torch.manual_seed(0)
    unet = randomise(diffusers.UNet2DConditionModel.from_config(reference_config("unet_tiny.json")))
    inpaint_unet = randomise(diffusers.UNet2DConditionModel.from_config(dict(reference_config("unet_tiny.json"),
                                                                             in_channels=9)))
    vae = randomise(diffusers.AutoencoderKL.from_config(reference_config("vae_tiny.json")), 0.1)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**reference_config("clip_text_tiny.json")))
    randomise(text, 0.1)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(CONFIGS / "tokenizer_tiny_clip"))
    return dict(unet=unet, inpaint_unet=inpaint_unet, vae=vae, text_encoder=text, tokenizer=tokenizer)


def reference_pipeline(parts, cls, scheduler: str, unet="unet"):
    scheduler_cls = getattr(diffusers, SCHEDULERS[scheduler])
    return cls(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=parts[unet],
               scheduler=scheduler_cls.from_config(SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)


def our_pipeline(ref, tmp_path):
    ref.save_pretrained(tmp_path / "model", safe_serialization=True)
    return StableDiffusionPipeline.from_pretrained(tmp_path / "model")


def assert_images_match(ours, expected):
    a = np.asarray(ours, dtype=np.int16)
    b = np.asarray(expected, dtype=np.int16)
    assert a.shape == b.shape
    close = np.abs(a - b) <= 1
    assert close.mean() >= 0.999, f"only {close.mean():.5f} of pixels within 1/255 (max diff {np.abs(a - b).max()})"


def sample_image(size=64, seed=3):
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (size // 8, size // 8, 3)), np.ones((8, 8, 1)))
    return Image.fromarray(base.astype(np.uint8))


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_text_to_image_matches_diffusers(reference_parts, scheduler, tmp_path, rng):
    ref = reference_pipeline(reference_parts, diffusers.StableDiffusionPipeline, scheduler)
    ours = our_pipeline(ref, tmp_path)
    latents = rng.standard_normal((2, 4, 32, 32)).astype("float32")
    kwargs = dict(negative_prompt=["模糊", "low quality"], height=64, width=64, num_inference_steps=4, guidance_scale=7.5)
    expected = ref([PROMPT, "blue square"], latents=torch.from_numpy(latents), **kwargs).images
    got = ours([PROMPT, "blue square"], latents=latents, progress=False, **kwargs).images
    for g, e in zip(got, expected):
        assert_images_match(g, e)


def test_guidance_rescale_matches_diffusers(reference_parts, tmp_path, rng):
    """diffusers' ``guidance_rescale`` (Lin et al. 2023): the same latents, a change far beyond that agreement, a
    checked value. Latents, not images: this tiny random VAE decodes a visible change to a pixel or two."""
    ref = reference_pipeline(reference_parts, diffusers.StableDiffusionPipeline, "euler")
    ours = our_pipeline(ref, tmp_path)
    latents = rng.standard_normal((1, 4, 32, 32)).astype("float32")
    kwargs = dict(height=64, width=64, num_inference_steps=4, guidance_scale=30.0, output_type="latent",
                  negative_prompt="low quality 模糊")
    expected = ref(PROMPT, latents=torch.from_numpy(latents), guidance_rescale=0.7, **kwargs).images.numpy()
    got = ours(PROMPT, latents=latents, progress=False, guidance_rescale=0.7, **kwargs)
    plain = ours(PROMPT, latents=latents, progress=False, **kwargs).images
    error, effect = np.abs(got.images - expected).max(), np.abs(got.images - plain).max()
    assert error < 1e-4 * np.abs(expected).max()
    assert effect > 20 * error                          # the agreement is about rescaling, not despite it
    assert got.params[0].extra == {"Guidance rescale": "0.7"} and "Guidance rescale: 0.7" in to_a1111_text(got.params[0])
    for bad in (1.5, -0.1, "0.7", True):
        with pytest.raises(ValueError, match="guidance_rescale must be a number from 0 to 1"):
            ours(PROMPT, latents=latents, progress=False, guidance_rescale=bad, **kwargs)


def test_rescale_guidance_is_diffusers_rescale_noise_cfg(rng):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
    from stable_diffusion_chinese.pipelines.stable_diffusion import rescale_guidance

    cond = rng.standard_normal((2, 4, 8, 8)).astype("float32")
    guided = (3.0 * rng.standard_normal((2, 4, 8, 8)) + 0.5).astype("float32")      # guidance inflated its spread
    for phi in (0.0, 0.7, 1.0):
        expected = rescale_noise_cfg(torch.from_numpy(guided), torch.from_numpy(cond), guidance_rescale=phi).numpy()
        got = rescale_guidance(paddle.to_tensor(guided), paddle.to_tensor(cond), phi).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    full = rescale_guidance(paddle.to_tensor(guided), paddle.to_tensor(cond), 1.0).numpy()
    np.testing.assert_allclose(full.std(axis=(1, 2, 3), ddof=1), cond.std(axis=(1, 2, 3), ddof=1), rtol=1e-5)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_image_to_image_matches_diffusers(reference_parts, scheduler, tmp_path):
    ref = reference_pipeline(reference_parts, diffusers.StableDiffusionImg2ImgPipeline, scheduler)
    ours = our_pipeline(ref, tmp_path)
    kwargs = dict(image=sample_image(), strength=0.6, num_inference_steps=5, guidance_scale=6.0)
    expected = ref(PROMPT, generator=[torch.Generator().manual_seed(7)], **kwargs).images
    got = ours.img2img(PROMPT, generator=[TorchNormal(7)], progress=False, **kwargs).images
    assert_images_match(got[0], expected[0])


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("unet", ["inpaint_unet", "unet"])
def test_inpainting_matches_diffusers(reference_parts, scheduler, unet, tmp_path):
    ref = reference_pipeline(reference_parts, diffusers.StableDiffusionInpaintPipeline, scheduler, unet=unet)
    ours = our_pipeline(ref, tmp_path)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 255
    kwargs = dict(image=sample_image(), mask_image=Image.fromarray(mask), num_inference_steps=4, guidance_scale=7.0,
                  height=64, width=64)
    for strength in (1.0, 0.75):
        expected = ref(PROMPT, generator=torch.Generator().manual_seed(11), strength=strength, **kwargs).images
        got = ours.inpaint(PROMPT, generator=[TorchNormal(11)], strength=strength, progress=False, **kwargs).images
        assert_images_match(got[0], expected[0])


@pytest.mark.parametrize("name", ["euler", "dpm++2m_karras", "euler_a"])
def test_sampler_chosen_per_call_equals_diffusers_from_config_swap(reference_parts, name, tmp_path, rng):
    """`scheduler="euler"` on a DDIM model behaves like `EulerDiscreteScheduler.from_config(pipe.scheduler.config)`."""
    ref = reference_pipeline(reference_parts, diffusers.StableDiffusionPipeline, "ddim")
    ours = our_pipeline(ref, tmp_path)
    swap = {"euler": (diffusers.EulerDiscreteScheduler, {}),
            "dpm++2m_karras": (diffusers.DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
            "euler_a": (diffusers.EulerAncestralDiscreteScheduler, {})}[name]
    # from the saved folder, as a diffusers user of that folder would (the in-memory config also lists
    # `_use_default_values`, which save_pretrained does not write)
    ref.scheduler = swap[0].from_pretrained(tmp_path / "model", subfolder="scheduler", **swap[1])
    latents = rng.standard_normal((1, 4, 32, 32)).astype("float32")
    kwargs = dict(height=64, width=64, num_inference_steps=4, guidance_scale=7.5)
    expected = ref(PROMPT, latents=torch.from_numpy(latents), generator=[torch.Generator().manual_seed(5)],
                   **kwargs).images
    got = ours(PROMPT, latents=latents, scheduler=name, generator=[TorchNormal(5)], progress=False, **kwargs).images
    assert_images_match(got[0], expected[0])
