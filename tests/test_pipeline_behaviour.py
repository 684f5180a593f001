"""What a user relies on beyond parity: seeds, batches, callbacks, output types, metadata, bad input."""
import json

import numpy as np
import pytest
from PIL import Image

from stable_diffusion_chinese.pipelines.metadata import read_png_params
from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline, call_arguments
from tiny_pipeline import write_tiny_model

FAST = dict(height=64, width=64, num_inference_steps=3, progress=False)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return StableDiffusionPipeline.from_pretrained(write_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("scheduler", ["dpm++2m", "euler_a"])
def test_image_depends_on_its_own_seed_not_the_batch(pipe, scheduler):
    alone = pipe("红色的圆形", seed=42, scheduler=scheduler, **FAST).images[0]
    batch = pipe("红色的圆形", seed=[7, 42, 9], num_images_per_prompt=3, scheduler=scheduler, **FAST).images
    assert np.abs(pixels(alone) - pixels(batch[1])).max() <= 1
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).max() > 1  # other seeds do change the image


def test_seed_zero_is_a_seed_and_int_seed_counts_up(pipe):
    first = pipe("蓝色的方块", seed=0, num_images_per_prompt=2, **FAST)
    assert [p.seed for p in first.params] == [0, 1]
    again = pipe("蓝色的方块", seed=1, **FAST).images[0]
    assert np.array_equal(pixels(again), pixels(first.images[1]))


def test_callback_can_stop_early(pipe):
    seen = []

    def stop_after_two(step, timestep, latents):
        seen.append(step)
        return step < 1

    out = pipe("星星", seed=1, callback=stop_after_two, **dict(FAST, num_inference_steps=5))
    assert seen == [0, 1] and out.stopped_at == 1
    assert isinstance(out.images[0], Image.Image)


def test_output_types(pipe):
    latent = pipe("星星", seed=3, output_type="latent", **FAST).images
    assert latent.shape == (1, 4, 8, 8)
    array = pipe("星星", seed=3, output_type="numpy", **FAST).images
    assert array.shape == (1, 64, 64, 3) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1
    image = pipe("星星", seed=3, **FAST).images[0]
    assert np.abs(np.round(array[0] * 255) - pixels(image)).max() <= 1


def test_guidance_at_most_one_skips_the_negative_branch(pipe):
    a = pipe("圆形", negative_prompt="方块", guidance_scale=1.0, seed=5, **FAST).images[0]
    b = pipe("圆形", negative_prompt="完全不同的负面提示", guidance_scale=1.0, seed=5, **FAST).images[0]
    assert np.array_equal(pixels(a), pixels(b))


def test_long_prompt_is_encoded_in_chunks_not_truncated(pipe):
    long_prompt = "，".join(["红色的圆形在左上角"] * 12)  # 119 tokens: three chunks of the 48-token window
    tail_changed = long_prompt + "，蓝色"
    a = pipe(long_prompt, seed=2, **FAST).images[0]
    b = pipe(tail_changed, seed=2, **FAST).images[0]
    assert np.abs(pixels(a) - pixels(b)).max() > 0


def test_saved_png_regenerates_the_same_image(pipe, tmp_path):
    out = pipe("水墨风格山水画", negative_prompt="模糊", seed=123, scheduler="euler_a", guidance_scale=5.0, **FAST)
    (path,) = out.save(tmp_path)
    params = read_png_params(path)
    assert params.seed == 123 and params.sampler == "euler_a" and params.cfg_scale == 5.0
    again = pipe(progress=False, **call_arguments(params)).images[0]
    assert np.array_equal(pixels(again), pixels(Image.open(path)))


def test_img2img_and_inpaint_run_with_seeds(pipe):
    source = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    a = pipe.img2img("红色", source, strength=0.5, seed=4, **FAST).images[0]
    b = pipe.img2img("红色", source, strength=0.5, seed=4, **FAST).images[0]
    assert np.array_equal(pixels(a), pixels(b)) and a.size == (64, 64)
    painted = pipe.inpaint("红色", source, mask, seed=4, **FAST).images[0]
    assert painted.size == (64, 64)


@pytest.mark.parametrize("kwargs,message", [
    (dict(height=65), "height=65 must be a positive multiple of 8"),
    (dict(width=0), "width=0 must be a positive multiple of 8"),
    (dict(height=4096, width=4096), "more than"),
    (dict(num_inference_steps=0), "num_inference_steps must be an integer from 1"),
    (dict(scheduler="dpm_fast"), "unknown scheduler 'dpm_fast'; valid names: ddim"),
    (dict(output_type="jpeg"), "output_type must be one of"),
    (dict(seed=[1, 2]), "got 2 seeds for 1 images"),
    (dict(seed=-5), "seed -5 is outside"),
    (dict(seed="abc"), "seed must be an int"),
    (dict(latents=np.zeros((1, 4, 4, 4), np.float32)), r"latents must have shape \[1, 4, 8, 8\]"),
    (dict(negative_prompt=["a", "b"]), "got 2 negative prompts for 1 prompts"),
])
def test_bad_arguments_are_named(pipe, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pipe("圆形", **{**FAST, **kwargs})


def test_bad_images_are_named(pipe, tmp_path):
    source = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="strength must be a number in"):
        pipe.img2img("a", source, strength=0.0, **FAST)
    with pytest.raises(ValueError, match="mask_image is 32x32 but the image is 64x64"):
        pipe.inpaint("a", source, Image.new("L", (32, 32)), **FAST)
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(ValueError, match="cannot read image"):
        pipe.img2img("a", tmp_path / "not.png", **FAST)
    with pytest.raises(TypeError, match="prompt must be a string"):
        pipe(123, **FAST)
    rgba = Image.new("RGBA", (64, 64), (10, 20, 30, 128))
    assert pipe.img2img("a", rgba, strength=0.5, seed=1, **FAST).images[0].size == (64, 64)


def with_generation_defaults(folder, defaults):
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["_generation_defaults"] = defaults
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def test_a_model_can_recommend_its_steps_and_guidance(tmp_path):
    folder = with_generation_defaults(write_tiny_model(tmp_path / "model"),
                                      {"num_inference_steps": 2, "guidance_scale": 3.0})
    recommending = StableDiffusionPipeline.from_pretrained(folder)
    fast = dict(height=64, width=64, progress=False)
    made = recommending("红色的圆形", seed=3, **fast)
    assert (made.params[0].steps, made.params[0].cfg_scale) == (2, 3.0)
    explicit = recommending("红色的圆形", seed=3, num_inference_steps=2, guidance_scale=3.0, **fast)
    assert np.array_equal(pixels(made.images[0]), pixels(explicit.images[0]))
    overridden = recommending("红色的圆形", seed=3, guidance_scale=7.5, **fast)
    assert overridden.params[0].cfg_scale == 7.5
    assert not np.array_equal(pixels(made.images[0]), pixels(overridden.images[0]))
    plain = StableDiffusionPipeline.from_pretrained(write_tiny_model(tmp_path / "plain"))
    assert (plain("红色", seed=3, **fast).params[0].steps, plain.generation_defaults.guidance_scale) == (20, 7.5)


@pytest.mark.parametrize("defaults,message", [
    ({"guidance": 3}, r"unknown key\(s\) \['guidance'\] in '_generation_defaults'"),
    ({"num_inference_steps": 0}, "num_inference_steps must be a positive integer, got 0"),
    ({"guidance_scale": "high"}, "guidance_scale must be a number >= 0, got 'high'"),
    (3.0, "'_generation_defaults' must be an object"),
])
def test_bad_generation_defaults_are_named(tmp_path, defaults, message):
    folder = with_generation_defaults(write_tiny_model(tmp_path / "model"), defaults)
    with pytest.raises(ValueError, match=message):
        StableDiffusionPipeline.from_pretrained(folder)
