"""Our samplers against diffusers 0.42.1, step by step, on identical inputs.

Every case gives both schedulers the same config and checks the timesteps (exactly) and
init_noise_sigma, then runs the sampling loop. The model output is a fixed function of the model
input and t; ancestral noise is torch.randn on a seeded generator (diffusers draws it from the
generator, ours receives the same numbers as a tensor).

Two loops:
* ``test_sampling_loop_matches_diffusers``: with our own (correctly rounded) float32 sqrt/log/exp.
  Each step starts from diffusers' previous sample, so every step is checked on identical input:
  max|ours - ref| <= 1e-6 * max(1, max|x_t|, max|x_{t-1}|). That is 1e-6 absolute for unit-scale
  latents and ~8 float32 ulps for the sigma-space samplers' large first samples (|x| ~ 40, where one
  ulp is 3.8e-6) -- torch's own float32 sqrt/log are not correctly rounded (1 ulp), so a 1e-6
  absolute bound at that magnitude would demand reproducing torch's rounding.
* ``test_loop_is_bit_identical_with_torch_math``: the same samplers with torch's float32 sqrt/log/
  exp plugged into ``schedule.math32``; free-running (each from its own previous sample) and
  asserted bit-identical, showing the remaining arithmetic is diffusers' op for op.
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import numpy as np
import paddle
import pytest
import torch

from stable_diffusion_chinese.config import UnsupportedConfigError
from stable_diffusion_chinese.schedulers import SCHEDULERS, from_pretrained, make_scheduler, schedule
from stable_diffusion_chinese.schedulers.factory import CLASSES

REFERENCE_CONFIGS = Path(__file__).parent / "reference_configs"
SHAPE = (2, 4, 8, 8)
TOL = 1e-6

# diffusers itself calls np.array(tensor) in ways numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Stable Diffusion 1.x scheduler/scheduler_config.json (PNDMScheduler)
SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None, "clip_sample": False}

# our common name -> (diffusers class, options the name forces)
REFERENCE = {
    "ddim": (diffusers.DDIMScheduler, {}),
    "ddpm": (diffusers.DDPMScheduler, {}),
    "pndm": (diffusers.PNDMScheduler, {"skip_prk_steps": True}),
    "lms": (diffusers.LMSDiscreteScheduler, {}),
    "euler": (diffusers.EulerDiscreteScheduler, {}),
    "euler_a": (diffusers.EulerAncestralDiscreteScheduler, {}),
    "heun": (diffusers.HeunDiscreteScheduler, {}),
    "dpm++2m": (diffusers.DPMSolverMultistepScheduler,
                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm++2m_karras": (diffusers.DPMSolverMultistepScheduler,
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "unipc": (diffusers.UniPCMultistepScheduler, {}),
    "lcm": (diffusers.LCMScheduler, {}),
}
# schedulers whose diffusers step() draws noise from a generator
DRAWS_NOISE = {"ddpm", "euler_a", "lcm"}


def sd(**extra):
    return {**SD15, **extra}


# (name, config, num_inference_steps, eta): a few settings per sampler beyond the SD 1.x default
CASES = [
    ("ddim", sd(), 10, 0.0), ("ddim", sd(timestep_spacing="trailing"), 10, 0.0), ("ddim", {}, 10, 0.0),
    ("ddim", sd(timestep_spacing="linspace"), 7, 1.0), ("ddim", sd(clip_sample=True, clip_sample_range=1.5), 10, 0.5),
    ("ddim", sd(timestep_spacing="trailing", rescale_betas_zero_snr=True), 10, 0.0),
    ("ddpm", sd(), 10, 0.0), ("ddpm", {}, 10, 0.0), ("ddpm", sd(timestep_spacing="trailing", variance_type="fixed_large"), 8, 0.0),
    ("pndm", sd(), 10, 0.0), ("pndm", sd(timestep_spacing="linspace"), 12, 0.0), ("pndm", {}, 10, 0.0),
    ("lms", sd(), 10, 0.0), ("lms", sd(timestep_spacing="linspace", use_karras_sigmas=True), 10, 0.0), ("lms", {}, 10, 0.0),
    ("euler", sd(), 10, 0.0), ("euler", sd(timestep_spacing="trailing", use_karras_sigmas=True), 10, 0.0),
    ("euler", {"beta_schedule": "squaredcos_cap_v2", "final_sigmas_type": "sigma_min"}, 10, 0.0),
    ("euler", sd(timestep_spacing="trailing", rescale_betas_zero_snr=True), 10, 0.0),
    ("euler_a", sd(), 10, 0.0), ("euler_a", sd(timestep_spacing="linspace"), 10, 0.0), ("euler_a", {}, 10, 0.0),
    ("heun", sd(), 10, 0.0), ("heun", sd(timestep_spacing="linspace", use_karras_sigmas=True), 8, 0.0),
    ("heun", {"clip_sample": True}, 8, 0.0),
    ("dpm++2m", sd(), 10, 0.0), ("dpm++2m", sd(), 20, 0.0), ("dpm++2m", sd(timestep_spacing="trailing"), 10, 0.0),
    ("dpm++2m", sd(lower_order_final=False, final_sigmas_type="sigma_min"), 20, 0.0),
    ("dpm++2m", sd(solver_type="heun", euler_at_final=True), 12, 0.0), ("dpm++2m", {}, 10, 0.0),
    ("dpm++2m_karras", sd(), 10, 0.0), ("dpm++2m_karras", sd(), 20, 0.0),
    ("dpm++2m_karras", {}, 10, 0.0),
    ("unipc", sd(), 10, 0.0), ("unipc", sd(use_karras_sigmas=True, final_sigmas_type="sigma_min"), 10, 0.0),
    ("unipc", sd(solver_type="bh1", timestep_spacing="trailing", final_sigmas_type="sigma_min"), 10, 0.0),
    ("unipc", {}, 10, 0.0),
    # bh1 and noise-prediction UniPC need a nonzero final sigma: diffusers computes 0 * inf = NaN at sigma 0
    ("unipc", sd(predict_x0=False, disable_corrector=[0], final_sigmas_type="sigma_min"), 10, 0.0),
    ("lcm", sd(), 4, 0.0), ("lcm", {"clip_sample": True}, 8, 0.0),
]
# settings reached through diffusers' class names (the factory's second route): PNDM with its
# Runge-Kutta warm-up, and 3rd-order variants of the multistep solvers
CLASS_CASES = [("PNDMScheduler", sd(skip_prk_steps=False), 10),
               ("DPMSolverMultistepScheduler", sd(solver_order=3), 20),
               ("UniPCMultistepScheduler", sd(solver_order=3), 10)]


def fake_model(x: np.ndarray, t: float) -> np.ndarray:
    """A smooth fixed function of (x, t) standing in for the UNet."""
    x = x.astype(np.float64)
    out = 0.8 * np.tanh(0.7 * x + np.sin(t / 97.0)) + 0.2 * np.cos(3.0 * x + t / 250.0)
    return out.astype(np.float32)


def build_pair(name: str, config: dict, prediction_type: str):
    config = {**config, "prediction_type": prediction_type}
    ours = make_scheduler(name, config)
    cls, name_options = REFERENCE[name]
    ref = cls.from_config({**config, **name_options})
    return ours, ref


def seeded_noise(step: int) -> tuple[torch.Tensor, torch.Generator]:
    """The noise diffusers will draw from the returned generator, and the generator itself."""
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1000 + step))
    return noise, torch.Generator().manual_seed(1000 + step)


def run_loop(name, ours, ref, our_timesteps, ref_timesteps, sample: np.ndarray, eta: float = 0.0,
             exact: bool = False) -> float:
    """Sample with both and compare every step; returns the worst error / scale.

    exact=False: each step starts from diffusers' sample (teacher forcing), tolerance TOL * scale.
    exact=True: both run free and every prev_sample / x0 must be bit-identical.
    """
    ref_sample = torch.from_numpy(sample.copy())
    our_sample = paddle.to_tensor(sample)
    worst = 0.0
    for i, (t_ref, t_ours) in enumerate(zip(ref_timesteps, our_timesteps)):
        if not exact:
            our_sample = paddle.to_tensor(ref_sample.numpy())
        ref_in = ref.scale_model_input(ref_sample, t_ref)
        our_in = ours.scale_model_input(our_sample, t_ours)
        compare(f"{name} step {i}: model input", our_in, ref_in, ref_sample, exact)
        eps = fake_model(ref_in.numpy(), float(t_ref))
        noise, generator = seeded_noise(i)
        kwargs = {}
        if name in DRAWS_NOISE:
            kwargs["generator"] = generator
        if name == "ddim":
            kwargs.update(eta=eta, variance_noise=noise)
        ref_out = ref.step(torch.from_numpy(eps), t_ref, ref_sample, **kwargs)
        our_out = ours.step(paddle.to_tensor(eps), t_ours, our_sample, noise=paddle.to_tensor(noise.numpy()), eta=eta)
        worst = max(worst, compare(f"{name} step {i} (t={t_ours}): prev_sample", our_out.prev_sample,
                                   ref_out.prev_sample, ref_sample, exact))
        ref_x0 = getattr(ref_out, "denoised", getattr(ref_out, "pred_original_sample", None))
        if exact and ref_x0 is not None:
            compare(f"{name} step {i}: pred_original_sample", our_out.pred_original_sample, ref_x0, ref_sample, exact)
        ref_sample, our_sample = ref_out.prev_sample, our_out.prev_sample
    return worst


def compare(what: str, ours: paddle.Tensor, ref: torch.Tensor, ref_input: torch.Tensor, exact: bool) -> float:
    r = ref.numpy()
    assert np.isfinite(r).all(), f"{what}: the reference itself is not finite (a degenerate test case)"
    err = float(np.abs(ours.numpy().astype(np.float64) - r).max())
    if exact:
        assert err == 0.0, f"{what} is not bit-identical: differs by {err:.3g}"
        return 0.0
    scale = max(1.0, float(np.abs(r).max()), float(np.abs(ref_input.numpy()).max()))
    assert err <= TOL * scale, f"{what} differs by {err:.3g} (scale {scale:.3g})"
    return err / scale


def initial_sample(ref) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    return (torch.from_numpy(x) * ref.init_noise_sigma).numpy()


def check_schedule(ours, ref) -> None:
    ref_t = ref.timesteps.numpy()
    assert ours.timesteps.dtype == ref_t.dtype, (ours.timesteps.dtype, ref_t.dtype)
    if np.array_equal(ref_t, np.round(ref_t)):
        np.testing.assert_array_equal(ours.timesteps, ref_t)
    else:  # Karras timesteps are inverted from the float32 sigma table, itself 1 ulp apart (torch sqrt)
        np.testing.assert_allclose(ours.timesteps, ref_t, rtol=1e-6)
    np.testing.assert_allclose(ours.init_noise_sigma, float(ref.init_noise_sigma), rtol=1e-6)
    assert ours.order == ref.order


def einsum_fuses_multiply_adds() -> bool:
    """Whether torch's einsum over k (diffusers' UniPC sum_k rho_k D1_k) rounds once per multiply-add.

    Its einsum runs as an MKL gemm; on CPUs with AVX-512 MKL computes r0 * D0 + r1 * D1 as one FMA after the
    first product (measured: 1.2e-7 off the separately rounded sum); with MKL_ENABLE_INSTRUCTIONS=SSE4_2 it
    rounds each product, and on the AVX2 machine these tests were written on the case was bit-identical.
    Our sum is op by op (Paddle elementwise ops)."""
    generator = torch.Generator().manual_seed(0)
    d, r = torch.randn(2, 2, 4, 8, 8, generator=generator), torch.tensor([0.731, -0.2213])
    return not torch.equal(torch.einsum("k,bkc...->bc...", r, d), r[0] * d[:, 0] + r[1] * d[:, 1])


def skip_degenerate(name: str, config: dict, prediction_type: str) -> None:
    if name == "ddim" and config.get("rescale_betas_zero_snr") and prediction_type == "epsilon":
        pytest.skip("zero terminal SNR needs v_prediction: alpha_bar_T = 0 makes eps -> x0 divide by 0")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name,config,steps,eta", CASES)
def test_sampling_loop_matches_diffusers(name, config, steps, eta, prediction_type):
    skip_degenerate(name, config, prediction_type)
    ours, ref = build_pair(name, config, prediction_type)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    check_schedule(ours, ref)
    run_loop(name, ours, ref, ours.timesteps, ref.timesteps, initial_sample(ref), eta)


class TorchMath:
    """torch's CPU float32 sqrt/log/exp/expm1 and linalg.solve: what diffusers' float32 tensors use."""

    @staticmethod
    def _apply(fn, x):
        values = np.asarray(x, dtype=np.float32)
        return fn(torch.from_numpy(values.reshape(-1).copy())).numpy().reshape(values.shape)[()]

    def sqrt(self, x):
        return self._apply(torch.sqrt, x)

    def log(self, x):
        return self._apply(torch.log, x)

    def exp(self, x):
        return self._apply(torch.exp, x)

    def expm1(self, x):
        return self._apply(torch.expm1, x)

    def solve(self, a, b):
        return torch.linalg.solve(torch.from_numpy(a), torch.from_numpy(b)).numpy()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
# LMS is left out on purpose: we integrate its Lagrange polynomials exactly, diffusers with
# scipy.integrate.quad on a float32 integrand, so its coefficients differ in the last bits.
@pytest.mark.parametrize("name,config,steps,eta", [case for case in CASES if case[0] != "lms"])
def test_loop_is_bit_identical_with_torch_math(name, config, steps, eta, prediction_type, monkeypatch):
    skip_degenerate(name, config, prediction_type)
    monkeypatch.setattr(schedule, "math32", TorchMath())
    ours, ref = build_pair(name, config, prediction_type)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    if hasattr(ref, "sigmas"):
        np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    assert ours.init_noise_sigma == float(ref.init_noise_sigma)
    run_loop(name, ours, ref, ours.timesteps, ref.timesteps, initial_sample(ref), eta, exact=True)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "lms", "euler", "heun", "dpm++2m", "unipc", "lcm"])
def test_sample_prediction_matches_diffusers(name):
    ours, ref = build_pair(name, sd(), "sample")
    ours.set_timesteps(6)
    ref.set_timesteps(6)
    run_loop(name, ours, ref, ours.timesteps, ref.timesteps, initial_sample(ref))


@pytest.mark.parametrize("exact", [False, True], ids=["own_math", "torch_math"])
@pytest.mark.parametrize("class_name,config,steps", CLASS_CASES)
def test_class_name_configs_match_diffusers(class_name, config, steps, exact, monkeypatch):
    if exact:
        if class_name == "UniPCMultistepScheduler" and config["solver_order"] >= 3 and einsum_fuses_multiply_adds():
            pytest.skip("this CPU's MKL fuses the reference's sum over two D1 terms into an FMA, so it is not "
                        "op-by-op float32 here; the own_math case still checks it to 1e-6")
        monkeypatch.setattr(schedule, "math32", TorchMath())
    ours = make_scheduler(class_name, config)
    ref = getattr(diffusers, class_name).from_config(config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    check_schedule(ours, ref)
    run_loop(class_name, ours, ref, ours.timesteps, ref.timesteps, initial_sample(ref), exact=exact)


@pytest.mark.parametrize("config", [sd(), {}, {"beta_schedule": "squaredcos_cap_v2"}])
def test_betas_and_alphas_cumprod_are_bit_identical(config):
    """torch's float32 linspace and its float64-accumulated cumprod are reproduced exactly."""
    ours = make_scheduler("ddim", config)
    ref = diffusers.DDIMScheduler.from_config(config)
    np.testing.assert_array_equal(ours.betas, ref.betas.numpy())
    np.testing.assert_array_equal(ours.alphas_cumprod, ref.alphas_cumprod.numpy())


def test_zero_terminal_snr_rescale(monkeypatch):
    config = sd(timestep_spacing="trailing", rescale_betas_zero_snr=True)
    ref = diffusers.DDIMScheduler.from_config(config).alphas_cumprod.numpy()
    assert ref[-1] == 0.0
    # torch's sqrt is up to 1 ulp off; through the rescale that is a few ulps (3.6e-7 near 1), and
    # near T, where Algorithm 1 subtracts sqrt(alpha_bar_T) from sqrt(alpha_bar_t), an absolute
    # error of a few 1e-10 on values ~1e-5 (measured: 5e-10)
    np.testing.assert_allclose(make_scheduler("ddim", config).alphas_cumprod, ref, rtol=1e-6, atol=1e-9)
    monkeypatch.setattr(schedule, "math32", TorchMath())
    np.testing.assert_array_equal(make_scheduler("ddim", config).alphas_cumprod, ref)


@pytest.mark.parametrize("exact", [False, True], ids=["own_math", "torch_math"])
@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_img2img_timesteps_add_noise_and_loop(name, strength, exact, monkeypatch):
    if exact:
        if name == "lms":
            pytest.skip("LMS coefficients: exact integration vs scipy quad (see test_loop_is_bit_identical...)")
        monkeypatch.setattr(schedule, "math32", TorchMath())
    steps = 8 if name != "lcm" else 4
    ours, ref = build_pair(name, sd(), "epsilon")
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    our_ts = ours.img2img_timesteps(strength)
    if name == "lcm":  # diffusers' LCM img2img pipeline folds strength into set_timesteps
        ref.set_timesteps(steps, strength=strength)
        ref_ts = ref.timesteps
    else:  # StableDiffusionImg2ImgPipeline.get_timesteps
        t_start = max(steps - min(int(steps * strength), steps), 0)
        ref_ts = ref.timesteps[t_start * ref.order:]
        if hasattr(ref, "set_begin_index"):
            ref.set_begin_index(t_start * ref.order)
    np.testing.assert_array_equal(our_ts, ref_ts.numpy())
    assert len(our_ts) > 0

    rng = np.random.default_rng(1)
    image_latents = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    ref_noisy = ref.add_noise(torch.from_numpy(image_latents), torch.from_numpy(noise), ref_ts[:1].repeat(SHAPE[0]))
    our_noisy = ours.add_noise(paddle.to_tensor(image_latents), paddle.to_tensor(noise),
                               np.repeat(our_ts[:1], SHAPE[0]))
    compare(f"{name}: add_noise", our_noisy, ref_noisy, torch.from_numpy(image_latents), exact)
    run_loop(name, ours, ref, our_ts, ref_ts, ref_noisy.numpy(), exact=exact)


def test_add_noise_per_sample_timesteps():
    ours, ref = build_pair("ddpm", sd(), "epsilon")
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    t = np.array([999, 10], dtype=np.int64)
    expected = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
    got = ours.add_noise(paddle.to_tensor(x0), paddle.to_tensor(noise), paddle.to_tensor(t))
    compare("add_noise", got, expected, torch.from_numpy(x0), exact=False)


def test_unknown_scheduler_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        make_scheduler("dpm++_typo")
    for name in ("ddim", "euler_a", "dpm++2m_karras", "PNDMScheduler"):
        assert name in str(info.value)


def test_unsupported_option_is_a_clear_error():
    with pytest.raises(UnsupportedConfigError, match="thresholding"):
        make_scheduler("ddim", sd(thresholding=True))
    with pytest.raises(UnsupportedConfigError, match="use_exponential_sigmas"):
        make_scheduler("euler", sd(use_exponential_sigmas=True))
    with pytest.raises(ValueError, match="algorithm_type"):
        make_scheduler("DPMSolverMultistepScheduler", sd(algorithm_type="sde-dpmsolver++"))


def test_noise_must_match_sample_shape():
    scheduler = make_scheduler("euler_a", sd())
    scheduler.set_timesteps(4)
    sample = paddle.zeros(SHAPE)
    t = scheduler.timesteps[0]
    with pytest.raises(ValueError, match="noise shape"):
        scheduler.step(sample, t, sample, noise=paddle.zeros([1, 4, 8, 8]))
    with pytest.raises(TypeError, match="paddle.Tensor"):
        scheduler.step(np.zeros(SHAPE, np.float32), t, sample)


def test_without_noise_ancestral_samplers_draw_paddle_randn():
    scheduler = make_scheduler("euler_a", sd())
    scheduler.set_timesteps(4)
    sample = paddle.ones(SHAPE)
    paddle.seed(7)
    first = scheduler.step(paddle.zeros(SHAPE), scheduler.timesteps[0], sample).prev_sample.numpy()
    scheduler.set_timesteps(4)
    paddle.seed(7)
    again = scheduler.step(paddle.zeros(SHAPE), scheduler.timesteps[0], sample).prev_sample.numpy()
    np.testing.assert_array_equal(first, again)
    assert np.isfinite(first).all() and first.std() > 0.1


@pytest.mark.parametrize("name", list(REFERENCE))
def test_saved_config_reloads_here_and_in_diffusers(name, tmp_path):
    ours = make_scheduler(name, sd(timestep_spacing="trailing"))
    ours.save_pretrained(tmp_path)
    again = from_pretrained(tmp_path)
    assert type(again) is type(ours) and again.config == ours.config
    raw = json.loads((tmp_path / "scheduler_config.json").read_text())
    ref = getattr(diffusers, raw["_class_name"]).from_config(raw)
    steps = 4
    again.set_timesteps(steps)
    ref.set_timesteps(steps)
    check_schedule(again, ref)


def test_step_before_set_timesteps_is_a_clear_error():
    scheduler = make_scheduler("dpm++2m", sd())
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(paddle.zeros(SHAPE), 999, paddle.zeros(SHAPE))


def test_model_folder_config_picks_class(tmp_path):
    folder = tmp_path / "model" / "scheduler"
    folder.mkdir(parents=True)
    (folder / "scheduler_config.json").write_text(json.dumps(SD15))
    scheduler = from_pretrained(tmp_path / "model")
    assert type(scheduler).__name__ == "PNDMScheduler" and scheduler.config.skip_prk_steps
    ref = diffusers.PNDMScheduler.from_config(SD15)
    scheduler.set_timesteps(10)
    ref.set_timesteps(10)
    np.testing.assert_array_equal(scheduler.timesteps, ref.timesteps.numpy())


def test_reference_dpmsolver_config_with_infinity_loads_and_samples():
    path = REFERENCE_CONFIGS / "scheduler_dpmsolver_sd15.json"
    raw = json.loads(path.read_text())  # contains -Infinity, no _class_name
    ours = make_scheduler("DPMSolverMultistepScheduler", path)
    ref = diffusers.DPMSolverMultistepScheduler.from_config(raw)
    assert ours.config.lambda_min_clipped == -np.inf
    ours.set_timesteps(15)
    ref.set_timesteps(15)
    check_schedule(ours, ref)
    run_loop("dpm++2m", ours, ref, ours.timesteps, ref.timesteps, initial_sample(ref))


def test_config_for_one_class_loads_into_another_like_diffusers():
    """SD's PNDM config has no timestep_spacing: Euler must fall back to its own default (linspace)."""
    ours = make_scheduler("euler", SD15)
    ref = diffusers.EulerDiscreteScheduler.from_config(SD15)
    assert ours.config.timestep_spacing == ref.config.timestep_spacing == "linspace"
    dpm_raw = json.loads((REFERENCE_CONFIGS / "scheduler_dpmsolver_sd15.json").read_text())
    ours = make_scheduler("unipc", dpm_raw)
    ref = diffusers.UniPCMultistepScheduler.from_config(dpm_raw)
    assert ours.config.solver_type == ref.config.solver_type == "bh2"
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    check_schedule(ours, ref)


def test_every_common_name_has_a_reference():
    assert set(SCHEDULERS) - {"plms"} == set(REFERENCE)
    assert type(make_scheduler("plms", SD15)) is type(make_scheduler("pndm", SD15))


def measure() -> None:
    """Print the worst prev_sample differences per sampler (own math): teacher-forced per step, and
    free-running to the end of the loop. ``python tests/test_schedulers.py``"""
    def free_run(name, ours, ref, sample, eta):
        ref_sample, our_sample = torch.from_numpy(sample.copy()), paddle.to_tensor(sample)
        for i, (t_ref, t_ours) in enumerate(zip(ref.timesteps, ours.timesteps)):
            eps = fake_model(ref.scale_model_input(ref_sample, t_ref).numpy(), float(t_ref))
            ours.scale_model_input(our_sample, t_ours)
            noise, generator = seeded_noise(i)
            kwargs = {"generator": generator} if name in DRAWS_NOISE else {}
            if name == "ddim":
                kwargs.update(eta=eta, variance_noise=noise)
            ref_sample = ref.step(torch.from_numpy(eps), t_ref, ref_sample, **kwargs).prev_sample
            our_sample = ours.step(paddle.to_tensor(eps), t_ours, our_sample,
                                   noise=paddle.to_tensor(noise.numpy()), eta=eta).prev_sample
        r = ref_sample.numpy()
        return float(np.abs(our_sample.numpy() - r).max()) / max(1.0, float(np.abs(r).max()))

    worst: dict[str, list[float]] = {}
    for name, config, steps, eta in CASES:
        for prediction_type in ("epsilon", "v_prediction"):
            if name == "ddim" and config.get("rescale_betas_zero_snr") and prediction_type == "epsilon":
                continue
            row = worst.setdefault(name, [0.0, 0.0, 0.0])
            ours, ref = build_pair(name, config, prediction_type)
            ours.set_timesteps(steps)
            ref.set_timesteps(steps)
            row[0] = max(row[0], run_loop(name, ours, ref, ours.timesteps, ref.timesteps, initial_sample(ref), eta))
            ours, ref = build_pair(name, config, prediction_type)
            ours.set_timesteps(steps)
            ref.set_timesteps(steps)
            row[1] = max(row[1], free_run(name, ours, ref, initial_sample(ref), eta))
    print("worst max|ours - diffusers| / max(1, |sample|), over the CASES table, own float32 math")
    print(f"{'sampler':16} {'per step (same input)':>22} {'end of free-running loop':>26}")
    for name, (per_step, final, _) in worst.items():
        print(f"{name:16} {per_step:22.3g} {final:26.3g}")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    measure()


@pytest.mark.parametrize("cls_name, option, value, extra", [
    ("DPMSolverMultistepScheduler", "solver_type", "bh2", {}),
    # diffusers refuses deis with its default final_sigmas_type "zero"
    ("DPMSolverMultistepScheduler", "algorithm_type", "deis", {"final_sigmas_type": "sigma_min"}),
    ("UniPCMultistepScheduler", "solver_type", "heun", {}),
])
def test_sibling_solver_options_are_renamed_as_diffusers_does(cls_name, option, value, extra):
    """A config written for one multistep solver loads into another with diffusers' renames."""
    theirs = getattr(diffusers, cls_name)(**{option: value}, **extra).config[option]
    ours = getattr(CLASSES[cls_name](**{option: value}, **extra).config, option)
    assert theirs != value and ours == theirs
