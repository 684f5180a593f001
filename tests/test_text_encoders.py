"""Text encoders vs. the torch references (transformers CLIPTextModel / BertModel, diffusers
RobertaSeriesModelWithTransformation), on tiny random models and identical numpy inputs."""
import json
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch
from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
    RobertaSeriesConfig, RobertaSeriesModelWithTransformation)
from safetensors.numpy import save_file
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from stable_diffusion_chinese.config import UnsupportedConfigError
from stable_diffusion_chinese.text import (BertTextEncoder, CLIPTextEncoder, RobertaSeriesTextEncoder,
                                           text_encoder_class)
from stable_diffusion_chinese.weights import WeightsMismatchError, load_into

CONFIGS = Path(__file__).parent / "reference_configs"
TOL = 1e-5
TINY_BERT = dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64)


def read_config(name: str) -> dict:
    with open(CONFIGS / name, encoding="utf-8") as f:
        return json.load(f)


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter redrawn (non-trivial LayerNorms, non-zero padding rows, peaked attention)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                noise = rng.standard_normal(tuple(param.shape)).astype(np.float32)
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    value = 1.0 + 0.1 * noise
                elif name == "bias":
                    value = 0.1 * noise
                else:
                    value = 0.2 * noise
                param.copy_(torch.from_numpy(value))
    return model.eval()


def numpy_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def right_padded(rng, vocab: int, lengths, total: int, pad: int, first: int = 2):
    """ids with ``lengths[i]`` random tokens then ``pad``, and the matching 0/1 mask."""
    ids = np.full((len(lengths), total), pad, dtype=np.int64)
    mask = np.zeros((len(lengths), total), dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(first, vocab, size=n)
        mask[row, :n] = 1
    return ids, mask


def max_diff(ours: paddle.Tensor, reference: torch.Tensor) -> float:
    return float(np.abs(ours.numpy() - reference.detach().numpy()).max())


# ---------------------------------------------------------------- CLIP (SD 1.x)

@pytest.fixture(scope="module")
def clip_pair():
    reference = randomized(CLIPTextModel(CLIPTextConfig(**read_config("clip_text_tiny.json"))), seed=1)
    # transformers 5 saves CLIPTextModel without the ``text_model.`` level SD checkpoints have
    ours = CLIPTextEncoder.from_config(read_config("clip_text_tiny.json"))
    load_into(ours, CLIPTextEncoder.canonical_checkpoint_keys(numpy_state(reference)))
    ours.eval()
    return ours, reference


@pytest.fixture
def clip_inputs():
    rng = np.random.default_rng(10)
    return right_padded(rng, vocab=1000, lengths=[77, 9, 3], total=77, pad=1)


def test_clip_matches_transformers_without_mask(clip_pair, clip_inputs):
    ours, reference = clip_pair
    ids, _ = clip_inputs
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids)).last_hidden_state
    assert max_diff(ours.encode(ids), expected) <= TOL


def test_clip_matches_transformers_with_padding_mask(clip_pair, clip_inputs):
    ours, reference = clip_pair
    ids, mask = clip_inputs
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        unmasked = reference(torch.from_numpy(ids)).last_hidden_state
    assert float((expected - unmasked).abs().max()) > 1e-3  # the mask does change padded positions
    assert max_diff(ours.encode(ids, mask), expected) <= TOL


def test_clip_left_padding_matches_eager_attention(clip_pair):
    """Rows with no visible key (left padding under the causal mask) attend uniformly, as
    transformers' eager attention does (its sdpa path fills them differently; they are padding)."""
    _, reference = clip_pair
    eager_config = CLIPTextConfig(**read_config("clip_text_tiny.json"))
    eager_config._attn_implementation = "eager"
    eager = CLIPTextModel(eager_config).eval()
    eager.load_state_dict(reference.state_dict())
    ours = CLIPTextEncoder.from_config(read_config("clip_text_tiny.json"))
    load_into(ours, CLIPTextEncoder.canonical_checkpoint_keys(numpy_state(eager)))
    ids = np.array([[1, 1, 1, 0, 7, 8, 2], [0, 5, 6, 9, 2, 1, 1]], dtype=np.int64)
    mask = (ids != 1).astype(np.int64)
    with torch.no_grad():
        expected = eager(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    assert max_diff(ours.encode(ids, mask), expected) <= TOL


@pytest.mark.parametrize("clip_skip", [0, 1, 2, 5])
def test_clip_skip_follows_diffusers(clip_pair, clip_inputs, clip_skip):
    """diffusers' StableDiffusionPipeline.encode_prompt: final_layer_norm(hidden_states[-(clip_skip + 1)])."""
    ours, reference = clip_pair
    ids, _ = clip_inputs
    with torch.no_grad():
        hidden_states = reference(torch.from_numpy(ids), output_hidden_states=True).hidden_states
        expected = reference.final_layer_norm(hidden_states[-(clip_skip + 1)])
    assert len(hidden_states) == 6  # embeddings + 5 layers
    assert max_diff(ours.encode(ids, clip_skip=clip_skip), expected) <= TOL


def test_clip_skip_out_of_range(clip_pair, clip_inputs):
    ours, _ = clip_pair
    with pytest.raises(ValueError, match="clip_skip must be an integer from 0 to 5"):
        ours.encode(clip_inputs[0], clip_skip=6)


def test_clip_accepts_both_checkpoint_layouts(clip_pair):
    _, reference = clip_pair
    flat = numpy_state(reference)  # transformers 5: "embeddings.token_embedding.weight"
    prefixed = {"text_model." + k: v for k, v in flat.items()}  # SD 1.x files
    assert CLIPTextEncoder.canonical_checkpoint_keys(flat).keys() == prefixed.keys()
    assert CLIPTextEncoder.canonical_checkpoint_keys(prefixed).keys() == prefixed.keys()
    # older exports also saved the position_ids buffer, which is skipped
    prefixed["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    load_into(CLIPTextEncoder.from_config(read_config("clip_text_tiny.json")),
              CLIPTextEncoder.canonical_checkpoint_keys(prefixed))


def test_clip_from_pretrained_sd_layout(clip_pair, clip_inputs, tmp_path):
    """A text_encoder folder as SD 1.x ships it: config.json + model.safetensors with text_model. keys."""
    _, reference = clip_pair
    reference.config.to_json_file(tmp_path / "config.json")
    save_file({"text_model." + k: v for k, v in numpy_state(reference).items()},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = CLIPTextEncoder.from_pretrained(tmp_path)
    ids, _ = clip_inputs
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids)).last_hidden_state
    assert max_diff(ours.encode(ids), expected) <= TOL


def test_missing_key_is_named(clip_pair):
    _, reference = clip_pair
    state = CLIPTextEncoder.canonical_checkpoint_keys(numpy_state(reference))
    del state["text_model.final_layer_norm.weight"]
    with pytest.raises(WeightsMismatchError, match=r"missing keys \(1\): text_model\.final_layer_norm\.weight"):
        load_into(CLIPTextEncoder.from_config(read_config("clip_text_tiny.json")), state)


# ---------------------------------------------------------------- Chinese BERT (Taiyi)

@pytest.fixture(scope="module")
def bert_reference():
    return randomized(BertModel(BertConfig(**TINY_BERT)), seed=2)


@pytest.fixture
def bert_inputs():
    rng = np.random.default_rng(20)
    return right_padded(rng, vocab=200, lengths=[64, 11, 4], total=64, pad=0, first=0)


@pytest.mark.parametrize("with_mask", [False, True])
def test_bert_matches_transformers(bert_reference, bert_inputs, with_mask):
    ours = BertTextEncoder.from_config(TINY_BERT)
    load_into(ours, numpy_state(bert_reference))  # the reference's pooler.* keys are skipped
    ours.eval()
    ids, mask = bert_inputs
    torch_mask = torch.from_numpy(mask) if with_mask else None
    with torch.no_grad():
        expected = bert_reference(torch.from_numpy(ids), attention_mask=torch_mask).last_hidden_state
    assert max_diff(ours.encode(ids, mask if with_mask else None), expected) <= TOL


def test_bert_pooler_when_asked(bert_reference, bert_inputs):
    ours = BertTextEncoder.from_config({**TINY_BERT, "add_pooling_layer": True})
    load_into(ours, numpy_state(bert_reference))
    ours.eval()
    ids, mask = bert_inputs
    with torch.no_grad():
        expected = bert_reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    hidden = ours.encode(ids, mask)
    assert max_diff(hidden, expected.last_hidden_state) <= TOL
    assert max_diff(ours.pooled_output(hidden), expected.pooler_output) <= TOL
    state = numpy_state(bert_reference)
    del state["pooler.dense.bias"]
    with pytest.raises(WeightsMismatchError, match="pooler.dense.bias"):
        load_into(BertTextEncoder.from_config({**TINY_BERT, "add_pooling_layer": True}), state)


def test_bert_unexpected_key_is_named(bert_reference):
    state = {**numpy_state(bert_reference), "cls.predictions.bias": np.zeros(200, np.float32)}
    with pytest.raises(WeightsMismatchError, match=r"unexpected keys \(1\): cls\.predictions\.bias"):
        load_into(BertTextEncoder.from_config(TINY_BERT), state)


def test_bert_taiyi_parameter_count():
    """bert_taiyi.json is BertModel with its pooler: 102267648 parameters (param_counts.json)."""
    config = read_config("bert_taiyi.json")
    expected = read_config("param_counts.json")["bert_taiyi.json"]
    with torch.device("meta"):
        reference = BertModel(BertConfig(**config))
    assert sum(p.numel() for p in reference.parameters()) == expected
    pooler = 768 * 768 + 768
    with paddle.LazyGuard():
        with_pooler = BertTextEncoder.from_config({**config, "add_pooling_layer": True})
        without = BertTextEncoder.from_config(config)
    assert sum(int(np.prod(p.shape)) for p in with_pooler.parameters()) == expected
    assert sum(int(np.prod(p.shape)) for p in without.parameters()) == expected - pooler


def test_bert_from_pretrained(bert_reference, bert_inputs, tmp_path):
    bert_reference.save_pretrained(tmp_path)
    ours = BertTextEncoder.from_pretrained(tmp_path)
    ids, mask = bert_inputs
    with torch.no_grad():
        expected = bert_reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    assert max_diff(ours.encode(ids, mask), expected) <= TOL


# ---------------------------------------------------------------- AltDiffusion (XLM-R + projection)

def roberta_config(pre: bool) -> dict:
    return dict(TINY_BERT, num_hidden_layers=3, max_position_embeddings=40, layer_norm_eps=1e-5,
                project_dim=24, has_pre_transformation=pre, type_vocab_size=1)


@pytest.fixture(scope="module", params=[False, True], ids=["transformation", "pre_transformation"])
def roberta_reference(request):
    model = RobertaSeriesModelWithTransformation(RobertaSeriesConfig(**roberta_config(request.param)))
    return randomized(model, seed=3)


@pytest.fixture
def roberta_inputs():
    rng = np.random.default_rng(30)
    # positions run to L + pad = 38 + 1, the last row of a 40-entry table
    return right_padded(rng, vocab=200, lengths=[38, 7, 2], total=38, pad=1)


@pytest.mark.parametrize("with_mask", [False, True])
def test_roberta_series_matches_diffusers(roberta_reference, roberta_inputs, with_mask):
    pre = roberta_reference.config.has_pre_transformation
    ours = RobertaSeriesTextEncoder.from_config(roberta_config(pre))
    load_into(ours, numpy_state(roberta_reference))  # roberta.pooler.* skipped
    ours.eval()
    ids, mask = roberta_inputs
    torch_mask = torch.from_numpy(mask) if with_mask else None
    with torch.no_grad():
        output = roberta_reference(torch.from_numpy(ids), attention_mask=torch_mask)
    assert output[0] is output.projection_state  # what the AltDiffusion pipeline takes
    assert ours.embedding_dim == 24
    assert max_diff(ours.encode(ids, mask if with_mask else None), output.projection_state) <= TOL


def test_roberta_series_from_pretrained(roberta_reference, roberta_inputs, tmp_path):
    roberta_reference.save_pretrained(tmp_path)
    ours = RobertaSeriesTextEncoder.from_pretrained(tmp_path)
    assert ours.config.has_pre_transformation == roberta_reference.config.has_pre_transformation
    ids, mask = roberta_inputs
    with torch.no_grad():
        expected = roberta_reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))[0]
    assert max_diff(ours.encode(ids, mask), expected) <= TOL


def test_roberta_series_paddle_round_trip(roberta_reference, roberta_inputs, tmp_path):
    """save_pretrained writes our own folder (config.json + model.pdparams); it loads back the same."""
    pre = roberta_reference.config.has_pre_transformation
    ours = RobertaSeriesTextEncoder.from_config(roberta_config(pre))
    load_into(ours, numpy_state(roberta_reference))
    ours.save_pretrained(tmp_path)
    again = RobertaSeriesTextEncoder.from_pretrained(tmp_path)
    ids, mask = roberta_inputs
    np.testing.assert_array_equal(again.encode(ids, mask).numpy(), ours.encode(ids, mask).numpy())


def test_roberta_series_length_limit():
    ours = RobertaSeriesTextEncoder.from_config(roberta_config(False))
    with pytest.raises(ValueError, match="at most 38"):
        ours.encode(np.full((1, 39), 5))


# ---------------------------------------------------------------- inputs, configs, lookup

def test_paddle_and_numpy_inputs_agree(clip_pair, clip_inputs):
    ours, _ = clip_pair
    ids, mask = clip_inputs
    from_numpy = ours.encode(ids, mask).numpy()
    from_paddle = ours.encode(paddle.to_tensor(ids.astype(np.int32)), paddle.to_tensor(mask.astype(bool))).numpy()
    np.testing.assert_array_equal(from_numpy, from_paddle)


@pytest.mark.parametrize("ids, mask, error, message", [
    (np.array([[0, 5, 1000]]), None, ValueError, r"must lie in \[0, 1000\).*from 0 to 1000"),
    (np.array([0, 5, 6]), None, ValueError, "2-D"),
    (np.zeros((1, 78), np.int64), None, ValueError, "at most 77"),
    (np.array([[0.0, 5.0]]), None, TypeError, "integers"),
    (np.array([[0, 5]]), np.array([[1, 1, 0]]), ValueError, "attention_mask has shape"),
    (np.array([[0, 5]]), np.array([[1, 2]]), ValueError, "only 0"),
])
def test_bad_inputs_are_named(clip_pair, ids, mask, error, message):
    with pytest.raises(error, match=message):
        clip_pair[0].encode(ids, mask)


def test_clip_skip_is_for_clip_only():
    with pytest.raises(ValueError, match="clip_skip applies to CLIP"):
        BertTextEncoder.from_config(TINY_BERT).encode([[1, 2]], clip_skip=1)


@pytest.mark.parametrize("cls, config, message", [
    (CLIPTextEncoder, {"hidden_act": "mish"}, "hidden_act='mish'"),
    (CLIPTextEncoder, {"text_config": {}, "vision_config": {}}, "text_config"),
    (BertTextEncoder, {"is_decoder": True}, "is_decoder"),
    (BertTextEncoder, {"model_type": "clip_text_model"}, "model_type"),
    (BertTextEncoder, {"position_embedding_type": "relative_key"}, "position_embedding_type"),
])
def test_unsupported_configs_are_refused(cls, config, message):
    with pytest.raises(UnsupportedConfigError, match=message):
        cls.config_class.from_dict(config)


def test_text_encoder_lookup():
    assert text_encoder_class("CLIPTextModel") is CLIPTextEncoder
    assert text_encoder_class("BertModel") is BertTextEncoder
    assert text_encoder_class("RobertaSeriesModelWithTransformation") is RobertaSeriesTextEncoder
    with pytest.raises(ValueError, match="no text encoder for 'T5EncoderModel'"):
        text_encoder_class("T5EncoderModel")
