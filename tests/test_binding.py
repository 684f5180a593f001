"""Binding words to places: where captions name each object, the cross-attention recorder, and the binding loss
(scenes/captions.py object_mentions, training/attention_maps.py)."""
import numpy as np
import paddle
import pytest

from stable_diffusion_chinese.scenes.captions import (COLOUR_WORDS, SHAPE_WORDS, TRADITIONAL, background_mention, caption,
                                                      object_mentions)
from stable_diffusion_chinese.scenes.sampling import sample_scene
from stable_diffusion_chinese.scenes.world import Scene, SceneObject
from stable_diffusion_chinese.training import SceneData, TrainConfig, Trainer
from stable_diffusion_chinese.training.attention_maps import (BindingTargets, CrossAttentionRecorder, binding_loss,
                                                              caption_token_positions, cell_mask, leak_loss)
from stable_diffusion_chinese.training.models import EMBEDDED_DIR, load_tokenizer

from test_training import config, fixed_loss, tiny_task

SIMPLIFIED = str.maketrans({t: chr(s) for s, t in TRADITIONAL.items()})
PAIR = Scene((SceneObject("circle", "red", 3), SceneObject("triangle", "blue", 5)), "pair", background="yellow")


def test_every_caption_says_where_it_names_each_object():
    """Train and held-out captions alike (synonyms, 的, traditional characters, a background colour that is not
    an object's): each object's words are found, in its own order, and they spell its colour and shape."""
    rng = np.random.default_rng(0)
    words = {name: {*forms, bare} for name, (forms, bare) in COLOUR_WORDS.items()}
    for split in ("train", "eval"):
        for _ in range(400):
            scene = sample_scene(rng, split)
            text = caption(scene, rng, split)
            mentions = object_mentions(scene, text)
            groups = [scene.objects] if scene.kind == "count" else [(o,) for o in scene.objects]
            assert mentions is not None and len(mentions) == len(groups), text
            for (chars, cells), group in zip(mentions, groups):
                assert cells == tuple(o.cell for o in group)
                spelled = "".join(text[c] for c in chars).translate(SIMPLIFIED)
                assert any(spelled.startswith(w) for w in words[group[0].colour]), text
                assert any(spelled.endswith(w) for w in SHAPE_WORDS[group[0].shape]), text
    text = "左边是紅色的圓形，右边是蓝色的三角形，黄色背景"
    assert [("".join(text[c] for c in chars), cells) for chars, cells in object_mentions(PAIR, text)] == [
        ("紅色圓形", (3,)), ("蓝色三角形", (5,))]
    assert object_mentions(PAIR, "左边是绿色的圆形，右边是蓝色的三角形") is None       # not this scene's words
    assert object_mentions(PAIR, "一个红色的圆形") is None                              # one object missing


def test_token_positions_follow_the_characters_bert_keeps():
    tokenizer = load_tokenizer(EMBEDDED_DIR)
    text = "左边2个红圆 蓝色背景"
    positions = caption_token_positions(tokenizer, text)
    ids = tokenizer.encode(text)
    assert positions[6] == -1                                                  # the space is dropped
    for char, index in zip(text, positions):
        if index >= 0:
            assert ids[index] == tokenizer.encode(char, add_special_tokens=False)[0]
    assert caption_token_positions(tokenizer, "red circle") is None            # a word piece spans characters


def test_binding_loss_is_zero_when_each_word_is_seen_only_in_its_cells_and_large_otherwise():
    tokenizer = load_tokenizer(EMBEDDED_DIR)
    text = "左边是红色的圆形，右边是蓝色的三角形，黄色背景"
    targets = BindingTargets(tokenizer, [PAIR], [text], length=32)
    red, blue = text.index("红") + 1, text.index("蓝") + 1                      # after [CLS]
    assert targets.selected[0].sum() == 9 and targets.selected[0, red] == 1 and targets.selected[0, blue] == 1
    assert targets.selected[0, text.index("黄") + 1] == 0                       # the background is no object
    for side in (4, 8, 16):
        masks = np.stack([cell_mask(cell, side) for cell in range(9)])
        assert (masks.sum(0) == 1).all() and masks.any(1).all()                # the cells tile every map
    side = 8
    right = np.full((1, side * side, 32), 1e-3, np.float32)
    right[0, :, red] = cell_mask(3, side)
    right[0, :, blue] = cell_mask(5, side)
    for token in np.nonzero(targets.selected[0])[0]:
        right[0, :, token] = cell_mask(3 if token < blue - 2 else 5, side)
    assert float(binding_loss({"a": [paddle.to_tensor(right)]}, targets)) == pytest.approx(0.0, abs=1e-6)
    uniform = paddle.full([1, side * side, 32], 1 / 32)
    share = cell_mask(3, side).sum() / side ** 2                              # 9 of 64 positions (3x3) for cell 3
    expected = (5 * (1 - share) ** 2 + 4 * (1 - cell_mask(5, side).sum() / side ** 2) ** 2) / 9
    assert float(binding_loss({"a": [uniform]}, targets)) == pytest.approx(expected, rel=1e-5)
    swapped = right.copy()
    swapped[0, :, [red, blue]] = swapped[0, :, [blue, red]]
    assert float(binding_loss({"a": [paddle.to_tensor(swapped)]}, targets)) == pytest.approx(2 / 9, rel=1e-3)
    assert BindingTargets(tokenizer, [PAIR], [""], length=32).empty             # a dropped caption binds nothing


def test_recorder_sees_every_cross_attention_call_and_keeps_the_gradient_when_asked(tmp_path):
    from stable_diffusion_chinese.pipelines.stable_diffusion import StableDiffusionPipeline
    from tiny_pipeline import write_tiny_model

    pipe = StableDiffusionPipeline.from_pretrained(write_tiny_model(tmp_path / "tiny"))
    prompt = "左边是红色的圆形，右边是蓝色的正方形"
    with CrossAttentionRecorder(pipe.unet, rows=1) as recorder:
        pipe(prompt, num_inference_steps=3, seed=0, progress=False)
    cross = [name for name, _ in pipe.unet.named_sublayers() if name.endswith("attn2")]   # down, mid, 2 up
    assert sorted(recorder.maps) == sorted(cross) and len(cross) == 4
    assert all(len(calls) == 3 and calls[0].shape[0] == 1 for calls in recorder.maps.values())
    for calls in recorder.maps.values():
        np.testing.assert_allclose(calls[0].sum(-1).numpy(), 1.0, rtol=1e-5)   # softmax rows over the tokens
        assert calls[0].stop_gradient
    pipe(prompt, num_inference_steps=1, seed=0, progress=False)                   # hooks removed: nothing added
    assert all(len(calls) == 3 for calls in recorder.maps.values())

    x = paddle.randn([2, 4, 8, 8])
    context = paddle.randn([2, 5, pipe.unet.config.cross_attention_dim])
    with CrossAttentionRecorder(pipe.unet, detach=False) as recorder:
        pipe.unet(x, paddle.to_tensor([10.0, 10.0]), context)
    maps = next(iter(recorder.maps.values()))[0]
    assert maps.shape[0] == 2 and not maps.stop_gradient


class OneBatch(SceneData):
    """Every step sees batch 0, worded the same: can the loss be lowered at all (not: does it generalise)."""

    def scenes(self, index):
        return super().scenes(0)

    def captions(self, index, variant):
        return super().captions(0, 0)


def test_diffusion_loss_adds_the_weighted_binding_loss_and_training_lowers_it(tmp_path):
    task = tiny_task(batch_size=4)
    task.caption_dropout = 0.0
    plain = fixed_loss(task, 1)
    bound = type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, task.schedule, task.data, seed=0,
                       caption_dropout=0.0, latent_reuse=task.latent_reuse, binding_weight=0.5)
    total = fixed_loss(bound, 1)
    parts = bound.last_parts
    assert parts["denoising"] == pytest.approx(plain, rel=1e-5) and parts["binding"] > 0.1
    assert total == pytest.approx(parts["denoising"] + 0.5 * parts["binding"], rel=1e-5)
    bound.binding_min_timestep = task.schedule.num_train_timesteps          # no sample is noised that far
    assert fixed_loss(bound, 1) == pytest.approx(plain, rel=1e-5) and "binding" not in bound.last_parts
    bound.binding_min_timestep = 0

    # a random tiny UNet has no features to bind with, so it is given one batch and a weight that dominates
    bound.data, bound.binding_weight = OneBatch(4, seed=0), 10.0
    fixed_loss(bound, 0)
    before = bound.last_parts["binding"]
    Trainer(bound, config(steps=30, learning_rate=3e-3, checkpoint_every=100, batch_size=4), tmp_path).run(
        progress=False)
    fixed_loss(bound, 0)
    assert bound.last_parts["binding"] < 0.8 * before
    for name in ("binding_weight", "binding_min_timestep"):
        with pytest.raises(ValueError, match=name):
            TrainConfig(**{name: -1})
    with pytest.raises(ValueError, match="where its objects are"):
        type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, task.schedule, object(), seed=0,
                   binding_weight=1.0)


def test_leak_loss_is_the_other_objects_share_of_the_attention_at_each_objects_cells():
    tokenizer = load_tokenizer(EMBEDDED_DIR)
    text = "左边是红色的圆形，右边是蓝色的三角形，黄色背景"
    targets = BindingTargets(tokenizer, [PAIR], [text], length=32)
    red, blue = text.index("红") + 1, text.index("蓝") + 1
    first = [t for t in np.nonzero(targets.selected[0])[0] if t < blue]          # 红色 圆形: 4 tokens; 蓝色三角形: 5
    second = [t for t in np.nonzero(targets.selected[0])[0] if t >= blue]
    assert targets.has_rivals and len(first) == 4 and len(second) == 5
    side = 8
    assert cell_mask(3, side).sum() == cell_mask(5, side).sum() == 6   # 2 map rows x 3 columns
    right = np.full((1, side * side, 32), 1e-3, np.float32)                     # pads and other words: ignored
    right[0][:, first] = cell_mask(3, side)[:, None]
    right[0][:, second] = cell_mask(5, side)[:, None]
    assert float(leak_loss({"a": [paddle.to_tensor(right)]}, targets)) == pytest.approx(0.0, abs=1e-6)
    uniform = paddle.full([1, side * side, 32], 1 / 32)
    # cell 3: 5 of the 9 object words are the other's; cell 5: 4 of 9 -- over 6 + 6 positions
    assert float(leak_loss({"a": [uniform]}, targets)) == pytest.approx(0.5, rel=1e-5)
    swapped = right.copy()
    swapped[0, :, [red, blue]] = swapped[0, :, [blue, red]]                    # the colours trade places
    # cell 3 sees 3 of its own words and 蓝 (1 / 4), cell 5 sees 4 of its own and 红 (1 / 5)
    leak = float(leak_loss({"a": [paddle.to_tensor(swapped)]}, targets))
    assert leak == pytest.approx((0.25 + 0.2) / 2, rel=1e-4)
    coarse = paddle.full([1, 4, 32], 1 / 32)                                    # 2x2: no position in the middle row
    assert not cell_mask(3, 2).any() and float(leak_loss({"a": [coarse]}, targets)) == 0.0
    one = Scene((SceneObject("circle", "red", 3),), "single")
    alone = BindingTargets(tokenizer, [one, PAIR], ["左边是一个红色的圆形", ""], length=32)
    assert not alone.empty and not alone.has_rivals                            # nothing to leak to
    both = BindingTargets(tokenizer, [one, PAIR], ["左边是一个红色的圆形", text], length=32)
    own, other, at = both.rivals(side)
    assert not at[0].any() and at[1].sum() == 12 and other[1].sum() == 6 * 5 + 6 * 4


def test_background_leak_is_the_object_words_share_against_the_background_word_in_empty_cells():
    tokenizer = load_tokenizer(EMBEDDED_DIR)
    text = "左边是红色的圆形，右边是蓝色的三角形，黄色背景"
    assert background_mention(PAIR, text) == [text.index("黄"), text.index("黄") + 1]
    assert background_mention(PAIR, "背景是黄色，左边是红色的圆形，右边是蓝色的三角形") == [3, 4]
    assert background_mention(Scene(PAIR.objects, "pair"), "左边是红色的圆形，右边是蓝色的三角形") == []
    targets = BindingTargets(tokenizer, [PAIR], [text], length=32)
    yellow = [text.index("黄") + 1, text.index("黄") + 2]                      # + 1: the [CLS] token
    words = list(np.nonzero(targets.selected[0])[0])
    assert targets.has_background and len(words) == 9
    side = 8
    empty = ~(cell_mask(3, side) | cell_mask(5, side))
    own, other, at = targets.background_rivals(side)
    assert (at[0] == empty).all() and own[0].sum() == empty.sum() * 2 and other[0].sum() == empty.sum() * 9
    clean = np.full((1, side * side, 32), 1e-3, np.float32)                    # pads and other words: ignored
    clean[0][:, words] = 0.0
    clean[0][np.ix_(cell_mask(3, side), words[:4])] = 1.0
    clean[0][np.ix_(cell_mask(5, side), words[4:])] = 1.0
    clean[0][:, yellow] = empty[:, None]
    maps = {"a": [paddle.to_tensor(clean)]}
    assert float(leak_loss(maps, targets, background=True)) == pytest.approx(0.0, abs=1e-6)
    assert float(leak_loss(maps, targets)) == pytest.approx(0.0, abs=1e-6)   # the objects' cells: no leak either
    uniform = {"a": [paddle.full([1, side * side, 32], 1 / 32)]}
    assert float(leak_loss(uniform, targets, background=True)) == pytest.approx(9 / 11, rel=1e-5)
    extra = clean.copy()
    extra[0][np.ix_(cell_mask(0, side), words[1:4])] = 1.0                    # 色圆形 seen in an empty cell too
    share = 3 / 5 * cell_mask(0, side).sum() / empty.sum()
    assert float(leak_loss({"a": [paddle.to_tensor(extra)]}, targets, background=True)) == pytest.approx(share, rel=1e-4)
    unnamed = BindingTargets(tokenizer, [Scene(PAIR.objects, "pair")], ["左边是红色的圆形，右边是蓝色的三角形"], length=32)
    assert not unnamed.empty and not unnamed.has_background and not unnamed.background_rivals(side)[2].any()


class ShortCaptions(SceneData):
    """Captions that fit the tiny text encoder's 16 positions: "红圆，蓝三角" (bare colour + shortest shape word)."""

    def captions(self, index, variant):
        return ["，".join(COLOUR_WORDS[o.colour][1] + min(SHAPE_WORDS[o.shape], key=len) for o in scene.objects)
                for scene in self.scenes(index)[0]]


def test_diffusion_loss_adds_the_weighted_leak_loss_on_pair_scenes_only(tmp_path):
    from stable_diffusion_chinese.training import stages

    task = tiny_task(batch_size=4)

    def with_data(kinds, **weights):
        return type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, task.schedule,
                          ShortCaptions(4, seed=0, kinds=kinds), seed=0, caption_dropout=0.0, **weights)
    plain = fixed_loss(with_data({"pair": 1.0}), 1)
    leaky = with_data({"pair": 1.0}, leak_weight=0.5)
    total = fixed_loss(leaky, 1)
    parts = leaky.last_parts
    assert "binding" not in parts and 0.05 < parts["leak"] < 0.95 and parts["denoising"] == pytest.approx(plain, rel=1e-5)
    assert total == pytest.approx(parts["denoising"] + 0.5 * parts["leak"], rel=1e-5)
    singles = with_data({"single": 1.0}, leak_weight=0.5)                       # one object: nothing to leak to
    fixed_loss(singles, 1)
    assert "leak" not in singles.last_parts
    with pytest.raises(ValueError, match="leak_weight"):
        TrainConfig(leak_weight=-1)
    with pytest.raises(ValueError, match="leak_weight is for the embedded model's scene data"):
        stages.finetune(tmp_path, tmp_path, tmp_path / "run", TrainConfig(leak_weight=1.0), progress=False)


class NamedBackgrounds(ShortCaptions):
    """ShortCaptions that also name the background, when a scene has one: "红圆，黄背景"."""

    def captions(self, index, variant):
        scenes = self.scenes(index)[0]
        return [text + (f"，{COLOUR_WORDS[scene.background][1]}背景" if scene.background else "")
                for text, scene in zip(super().captions(index, variant), scenes)]


def test_diffusion_loss_adds_the_weighted_background_leak_loss_where_the_background_is_named(tmp_path):
    from stable_diffusion_chinese.training import stages

    task = tiny_task(batch_size=4)

    def with_data(data, **weights):
        return type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, task.schedule, data, seed=0,
                          caption_dropout=0.0, **weights)
    data = NamedBackgrounds(4, seed=0, kinds={"single": 1.0})
    assert any(scene.background for scene in data.scenes(1)[0])
    plain = fixed_loss(with_data(data), 1)
    leaky = with_data(data, background_leak_weight=0.5)
    total = fixed_loss(leaky, 1)
    parts = leaky.last_parts
    assert "leak" not in parts and 0.05 < parts["background_leak"] < 0.95
    assert parts["denoising"] == pytest.approx(plain, rel=1e-5)
    assert total == pytest.approx(parts["denoising"] + 0.5 * parts["background_leak"], rel=1e-5)
    unnamed = with_data(ShortCaptions(4, seed=0, kinds={"single": 1.0}), background_leak_weight=0.5)
    fixed_loss(unnamed, 1)                                                       # no background word to compare with
    assert "background_leak" not in unnamed.last_parts
    with pytest.raises(ValueError, match="background_leak_weight"):
        TrainConfig(background_leak_weight=-1)
    with pytest.raises(ValueError, match="background_leak_weight is for the embedded model's scene data"):
        stages.finetune(tmp_path, tmp_path, tmp_path / "run", TrainConfig(background_leak_weight=1.0), progress=False)


def test_leak_loss_with_position_words_counts_the_other_objects_position_words_as_a_leak():
    tokenizer = load_tokenizer(EMBEDDED_DIR)
    text = "左边是红色的圆形，右边是蓝色的三角形，黄色背景"
    plain = BindingTargets(tokenizer, [PAIR], [text], length=32)
    targets = BindingTargets(tokenizer, [PAIR], [text], length=32, position_words=True)
    assert (targets.selected == plain.selected).all()                          # the binding loss is unchanged
    left, right = [text.index("左") + 1, text.index("左") + 2], [text.index("右") + 1, text.index("右") + 2]
    side = 8
    own, other, at = targets.rivals(side)
    assert own[0][cell_mask(3, side)][:, left].all() and other[0][cell_mask(3, side)][:, right].all()
    assert own[0][cell_mask(5, side)][:, right].all() and other[0][cell_mask(5, side)][:, left].all()
    words = list(np.nonzero(plain.selected[0])[0])
    maps = np.full((1, side * side, 32), 1e-3, np.float32)
    maps[0][np.ix_(cell_mask(3, side), words[:4])] = 1.0
    maps[0][np.ix_(cell_mask(5, side), words[4:])] = 1.0
    maps[0][np.ix_(cell_mask(3, side), right)] = 1.0                            # 右边 seen at the left object
    maps = {"a": [paddle.to_tensor(maps)]}
    assert float(leak_loss(maps, plain)) == pytest.approx(0.0, abs=1e-2)        # the object words alone: no leak
    # cell 3: 2 of its 6 words are the other's (右边 against 红色圆形); cell 5: only its own -- over 6 + 6 positions
    assert float(leak_loss(maps, targets)) == pytest.approx((2 / 6) / 2, rel=1e-2)


def test_object_weight_counts_the_denoising_error_in_the_objects_cells_that_many_times(tmp_path):
    from stable_diffusion_chinese.training import stages
    from stable_diffusion_chinese.training.tasks import object_weights, weighted_mse

    weights = object_weights([PAIR], 16, 3.0)
    inside = (cell_mask(3, 16) | cell_mask(5, 16)).reshape(16, 16)
    assert weights.shape == (1, 1, 16, 16) and (weights[0, 0][inside] == 3.0).all() and (weights[0, 0][~inside] == 1.0).all()

    rng = np.random.default_rng(0)
    prediction, target = rng.standard_normal((2, 4, 16, 16)), rng.standard_normal((2, 4, 16, 16))
    prediction[1][:, inside] += 2.0                                        # sample 1 is wrong mostly in the cells
    positions = np.concatenate([weights, weights])
    error = ((prediction - target) ** 2).mean(1, keepdims=True)
    expected = (error * positions).sum((1, 2, 3)) / positions.sum((1, 2, 3))
    as_tensor = lambda a: paddle.to_tensor(a.astype(np.float32))
    got = weighted_mse(as_tensor(prediction), as_tensor(target), as_tensor(positions)).numpy()
    plain = weighted_mse(as_tensor(prediction), as_tensor(target), None).numpy()
    assert got == pytest.approx(expected, rel=1e-5) and plain == pytest.approx(error.mean((1, 2, 3)), rel=1e-5)
    assert got[1] > 1.2 * plain[1]

    task = tiny_task(batch_size=4)
    task.caption_dropout = 0.0
    seen = {}
    task.unet.register_forward_post_hook(lambda layer, inputs, output: seen.update(prediction=output))

    class Recorded:                                                        # the schedule, noting each target it gives
        def __getattr__(self, name):
            return getattr(task.schedule, name)

        def target(self, *args):
            seen["target"] = task.schedule.target(*args)
            return seen["target"]

    weighted = type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, Recorded(), task.data, seed=0,
                          caption_dropout=0.0, latent_reuse=task.latent_reuse, object_weight=3.0)
    total = fixed_loss(weighted, 1)
    scenes = task.data.scenes(0)[0]
    error = ((seen["prediction"] - seen["target"]) ** 2).numpy().mean(1, keepdims=True)
    positions = object_weights(scenes, error.shape[-1], 3.0)
    assert total == pytest.approx(float(((error * positions).sum((1, 2, 3)) / positions.sum((1, 2, 3))).mean()), rel=1e-5)
    assert total != pytest.approx(fixed_loss(task, 1), rel=1e-3)
    with pytest.raises(ValueError, match="object_weight"):
        TrainConfig(object_weight=0)
    with pytest.raises(ValueError, match="where its objects are"):
        type(task)(task.unet, task.text_encoder, task.vae, task.tokenizer, task.schedule, object(), seed=0,
                   object_weight=2.0)
    with pytest.raises(ValueError, match="object_weight is for the embedded model's scene data"):
        stages.finetune(tmp_path, tmp_path, tmp_path / "run", TrainConfig(object_weight=2.0), progress=False)
