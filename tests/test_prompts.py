"""Prompt emphasis syntax (A1111-compatible) and chunked, weighted prompt encoding.

Parser expectations come from the docstring of A1111's modules/prompt_parser.py ``parse_prompt_attention``
(the floats there are A1111's own output) and from working A1111's rules by hand for the other cases.
Encoding runs on a fake character tokenizer and a small deterministic Paddle encoder, so it depends on no
other part of the project; the last tests repeat the key property with the project's real tokenizers.
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from conftest import reference_config

from stable_diffusion_chinese.pipelines.prompts import (
    BREAK_MARKER,
    encode_prompt,
    encode_prompt_pair,
    parse_prompt_attention,
    tokenize_prompt,
)

# ------------------------------------------------------------------------------------------ the parser

A1111_DOCSTRING_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]


@pytest.mark.parametrize("prompt, expected", A1111_DOCSTRING_EXAMPLES)
def test_parser_matches_a1111_docstring(prompt, expected):
    assert parse_prompt_attention(prompt) == expected  # exact floats, as A1111 multiplies them


def test_parser_example_without_trailing_text():
    assert parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))") == [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006)]


def test_parser_chinese_ascii_brackets():
    assert parse_prompt_attention("一只(猫:1.3)在[草地]上") == [
        ("一只", 1.0), ("猫", 1.3), ("在", 1.0), ("草地", 1 / 1.1), ("上", 1.0)]


def test_parser_full_width_brackets_and_colon_are_syntax():
    ascii_form = parse_prompt_attention("一只(猫:1.3)，((水墨画))")
    assert parse_prompt_attention("一只（猫：1.3），（（水墨画））") == ascii_form
    assert parse_prompt_attention("一只（猫:1.3)，(（水墨画）)") == ascii_form  # mixed pairs are one syntax
    assert ascii_form == [("一只", 1.0), ("猫", 1.3), ("，", 1.0), ("水墨画", 1.2100000000000002)]


def test_parser_keeps_plain_colons_and_chinese_square_brackets_as_typed():
    # A full-width colon that is not a weight stays full-width: the tokenizer must see what the user typed.
    assert parse_prompt_attention("风格：油画, 比例: 1:1") == [("风格：油画, 比例: 1:1", 1.0)]
    assert parse_prompt_attention("【高清】(猫)") == [("【高清】", 1.0), ("猫", 1.1)]
    assert parse_prompt_attention("(猫：粉色)") == [("猫：粉色", 1.1)]


def test_parser_escapes():
    assert parse_prompt_attention(r"\(a\) \[b\] \\ c") == [("(a) [b] \\ c", 1.0)]
    assert parse_prompt_attention(r"\（猫\）") == [("（猫）", 1.0)]
    assert parse_prompt_attention(r"(\(a\):1.5)") == [("(a)", 1.5)]
    assert parse_prompt_attention("a\\b") == [("ab", 1.0)]  # A1111 drops a backslash before other characters


def test_parser_unbalanced_brackets():
    assert parse_prompt_attention("((a") == [("a", 1.1 * 1.1)]
    assert parse_prompt_attention("[a") == [("a", 1 / 1.1)]
    assert parse_prompt_attention("a) b]") == [("a) b]", 1.0)]  # closers with nothing open are text
    assert parse_prompt_attention("x:1.2) y") == [("x:1.2) y", 1.0)]  # a weight with no ( open is text
    # ":1.3)" closes the innermost "(" even with a "[" opened after it; the "[" stays open to the end.
    # A1111 multiplies by its constant 1/1.1, hence 1.3 * (1 / 1.1), one ulp away from 1.3 / 1.1.
    assert parse_prompt_attention("(a [b:1.3) c") == [("a ", 1.3), ("b", 1.3 * (1 / 1.1)), (" c", 1 / 1.1)]
    assert parse_prompt_attention("(a]") == [("a]", 1.1)]


def test_parser_weights_nest_and_accept_signs():
    assert parse_prompt_attention("((a:2):0.5)") == [("a", 1.0)]
    assert parse_prompt_attention("(a:-1) (b:+.5)") == [("a", -1.0), (" ", 1.0), ("b", 0.5)]


def test_parser_rejects_malformed_weight():
    with pytest.raises(ValueError, match="invalid emphasis weight '1.2.3'"):
        parse_prompt_attention("(a:1.2.3)")


def test_parser_break():
    assert parse_prompt_attention("a BREAK b") == [("a", 1.0), BREAK_MARKER, ("b", 1.0)]
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), BREAK_MARKER, ("b", 1.1)]
    assert parse_prompt_attention("BREAKFAST break") == [("BREAKFAST break", 1.0)]  # not the keyword


def test_parser_empty_and_type():
    assert parse_prompt_attention("") == [("", 1.0)]
    assert parse_prompt_attention("()") == [("", 1.0)]
    with pytest.raises(TypeError, match="prompt must be a str"):
        parse_prompt_attention(None)


# ----------------------------------------------------------------------- fake tokenizer and encoder

BEGIN, END, PAD = 1, 2, 0
VOCAB = 64


class CharTokenizer:
    """One token per non-space character, like BERT on Chinese; framing [BEGIN] ... [END] [PAD]..."""

    def __init__(self, model_max_length=77):
        self.model_max_length = model_max_length

    def encode(self, text, add_special_tokens=True):
        ids = [3 + ord(c) % (VOCAB - 3) for c in text if not c.isspace()]
        return [BEGIN, *ids, END] if add_special_tokens else ids

    def __call__(self, texts, max_length=None, padding="max_length", truncation=True):
        max_length = max_length or self.model_max_length
        ids = np.full((len(texts), max_length), PAD, dtype=np.int64)
        mask = np.zeros((len(texts), max_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [BEGIN] + self.encode(text, add_special_tokens=False)[: max_length - 2] + [END]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class MixingEncoder(paddle.nn.Layer):
    """Token + position embeddings, then a causal running mean, masked: each output depends on the tokens
    before it, its position and the attention mask, as a real text encoder's does."""

    def __init__(self, dim=8, max_positions=512, use_attention_mask=True):
        super().__init__()
        self.config = SimpleNamespace(use_attention_mask=use_attention_mask)
        rng = np.random.default_rng(0)
        self.token = paddle.nn.Embedding(VOCAB, dim)
        self.token.weight.set_value(rng.standard_normal((VOCAB, dim)).astype("float32"))
        self.position = paddle.to_tensor(rng.standard_normal((max_positions, dim)).astype("float32"))
        self.calls = []

    def encode(self, input_ids, attention_mask=None):
        self.calls.append((tuple(input_ids.shape), attention_mask is not None))
        length = input_ids.shape[1]
        h = self.token(input_ids) + self.position[:length]
        h = paddle.cumsum(h, axis=1) / paddle.arange(1, length + 1, dtype="float32").reshape([1, -1, 1])
        if attention_mask is not None:
            h = h * (0.5 + attention_mask.astype("float32").unsqueeze(-1))
        return h


@pytest.fixture
def tokenizer():
    return CharTokenizer()


@pytest.fixture
def encoder():
    return MixingEncoder()


def text_ids(text):
    """The fake tokenizer's ids of ``text`` without begin/end tokens."""
    return CharTokenizer().encode(text, add_special_tokens=False)


def letters(n):
    """n single-character tokens, none of them emphasis syntax."""
    return "".join("abcdefghij"[i % 10] for i in range(n))


# ------------------------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("n_tokens, n_chunks", [(0, 1), (1, 1), (75, 1), (76, 2), (150, 2), (151, 3)])
def test_chunk_count_at_boundaries(tokenizer, n_tokens, n_chunks):
    chunks = tokenize_prompt(tokenizer, letters(n_tokens))
    assert chunks.input_ids.shape == (n_chunks, 77)
    ids = text_ids(letters(n_tokens))
    for row in range(n_chunks):
        part = ids[row * 75:(row + 1) * 75]
        expected = [BEGIN] + part + [END] + [PAD] * (75 - len(part))
        assert chunks.input_ids[row].tolist() == expected
        assert chunks.attention_mask[row].tolist() == [1] * (len(part) + 2) + [0] * (75 - len(part))


def test_chunk_length_follows_model_max_length():
    bert_like = CharTokenizer(model_max_length=512)
    chunks = tokenize_prompt(bert_like, letters(511))
    assert chunks.input_ids.shape == (2, 512)
    assert chunks.attention_mask.sum(axis=1).tolist() == [512, 3]  # 510 + 2, then 1 + 2
    assert tokenize_prompt(bert_like, letters(30), max_length=16).input_ids.shape == (3, 16)  # 14 + 14 + 2


def test_single_chunk_equals_plain_tokenization(tokenizer):
    prompt = "一只猫坐在窗台上 a cat"
    chunks = tokenize_prompt(tokenizer, prompt)
    plain = tokenizer([prompt], max_length=77)
    np.testing.assert_array_equal(chunks.input_ids, plain["input_ids"])
    np.testing.assert_array_equal(chunks.attention_mask, plain["attention_mask"])
    assert np.all(chunks.weights == 1.0)


def test_token_weights_follow_the_syntax(tokenizer):
    chunks = tokenize_prompt(tokenizer, "ab(cd:1.5)[e]")
    assert chunks.weights[0, :7].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.5, 1.5, 1 / 1.1, 1.0])
    assert np.all(chunks.weights[0, 7:] == 1.0)  # end token and padding
    assert chunks.input_ids[0, :7].tolist() == [BEGIN] + text_ids("abcde") + [END]


def test_parse_weights_off_reads_brackets_literally(tokenizer):
    chunks = tokenize_prompt(tokenizer, "(猫:1.5)", parse_weights=False)
    assert chunks.input_ids[0, 1:8].tolist() == text_ids("(猫:1.5)")
    assert np.all(chunks.weights == 1.0)


def test_break_starts_a_new_chunk(tokenizer):
    chunks = tokenize_prompt(tokenizer, "ab BREAK cd")
    assert chunks.input_ids[:, :4].tolist() == [[BEGIN, *text_ids("ab"), END],
                                                 [BEGIN, *text_ids("cd"), END]]
    # As in A1111: a leading BREAK leaves an empty first chunk, a trailing one adds nothing,
    # and a BREAK right after a full chunk does not add an empty one.
    assert len(tokenize_prompt(tokenizer, "BREAK ab")) == 2
    assert len(tokenize_prompt(tokenizer, "ab BREAK")) == 1
    assert len(tokenize_prompt(tokenizer, letters(75) + " BREAK ab")) == 2


def test_tokenize_rejects_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="max_length must be an int >= 3"):
        tokenize_prompt(tokenizer, "a", max_length=2)
    with pytest.raises(TypeError, match="prompt must be a str"):
        tokenize_prompt(tokenizer, ["a"])
    with pytest.raises(TypeError, match="prompt must be a str"):
        tokenize_prompt(tokenizer, 3, parse_weights=False)


def test_tokenizer_that_does_not_frame_is_rejected():
    class Unframed(CharTokenizer):
        def __call__(self, texts, max_length=None, padding="max_length", truncation=True):
            out = super().__call__(texts, max_length, padding, truncation)
            out["attention_mask"][:] = 1
            return out

    with pytest.raises(ValueError, match="does not frame the empty prompt"):
        tokenize_prompt(Unframed(), "a")


# ------------------------------------------------------------------------------------------- encoding


def test_plain_prompt_encodes_bitwise_like_plain_tokenization(tokenizer, encoder):
    prompt = "a cat on a mat, 一只猫"
    plain = tokenizer([prompt], max_length=77, padding="max_length", truncation=True)
    expected = encoder.encode(paddle.to_tensor(plain["input_ids"]), paddle.to_tensor(plain["attention_mask"]))
    got = encode_prompt(tokenizer, encoder, prompt)
    assert got.shape == [1, 77, 8]
    assert np.array_equal(got.numpy(), expected.numpy())


def test_mask_is_passed_only_when_the_encoder_config_asks(tokenizer):
    # diffusers' rule: SD's CLIP and Taiyi's BERT get no mask, AltDiffusion's XLM-R does.
    prompt = "a cat"
    plain = tokenizer([prompt], max_length=77)
    without = MixingEncoder(use_attention_mask=False)
    got = encode_prompt(tokenizer, without, prompt)
    assert without.calls == [((1, 77), False)]
    assert np.array_equal(got.numpy(), without.encode(paddle.to_tensor(plain["input_ids"])).numpy())
    assert not np.allclose(got.numpy(), encode_prompt(tokenizer, MixingEncoder(), prompt).numpy())


def test_long_prompt_is_the_concatenation_of_its_chunks(tokenizer, encoder):
    prompt = letters(151)
    got = encode_prompt(tokenizer, encoder, prompt).numpy()
    assert got.shape == (1, 3 * 77, 8)
    chunks = tokenize_prompt(tokenizer, prompt)
    for row in range(3):
        alone = encoder.encode(paddle.to_tensor(chunks.input_ids[row:row + 1]),
                               paddle.to_tensor(chunks.attention_mask[row:row + 1])).numpy()
        np.testing.assert_allclose(got[:, row * 77:(row + 1) * 77], alone, rtol=0, atol=1e-6)
    assert encoder.calls[0] == ((3, 77), True)  # all chunks of a prompt go through the encoder as one batch


def test_weights_scale_tokens_then_restore_each_chunks_mean(tokenizer, encoder):
    prompt = letters(70) + "(xyz:1.8)" + letters(10) + "[uvw]"  # chunk 0 holds the (..:1.8), chunk 1 the [...]
    chunks = tokenize_prompt(tokenizer, prompt)
    assert len(chunks) == 2
    got = encode_prompt(tokenizer, encoder, prompt).numpy().reshape(2, 77, 8)
    unweighted = encoder.encode(paddle.to_tensor(chunks.input_ids), paddle.to_tensor(chunks.attention_mask)).numpy()
    for row in range(2):
        z, w = unweighted[row].astype(np.float64), chunks.weights[row].astype(np.float64)[:, None]
        expected = z * w * (z.mean() / (z * w).mean())  # A1111 EmphasisOriginal, per chunk
        np.testing.assert_allclose(got[row], expected, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(got[row].mean(), z.mean(), rtol=1e-5)
    # Tokens of weight 1.8 are 1.8x the unit-weight tokens' scale factor: the emphasis really applies.
    scale = got[0] / unweighted[0]
    assert scale[71, 0] == pytest.approx(1.8 * scale[1, 0], rel=1e-5)
    assert scale[1, 0] != pytest.approx(1.0, abs=1e-3)  # and the mean restoration rescaled everything


def test_pair_pads_the_shorter_side_with_empty_chunks(tokenizer, encoder):
    long_prompt, short_negative = letters(100), "模糊, 低质量"
    positive, negative = encode_prompt_pair(tokenizer, encoder, long_prompt, short_negative)
    assert positive.shape == negative.shape == [1, 154, 8]
    np.testing.assert_allclose(positive.numpy(), encode_prompt(tokenizer, encoder, long_prompt).numpy(), atol=1e-6)
    np.testing.assert_allclose(negative.numpy()[:, :77], encode_prompt(tokenizer, encoder, short_negative).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(negative.numpy()[:, 77:], encode_prompt(tokenizer, encoder, "").numpy(), atol=1e-6)

    # The other way round: a long negative prompt pads the positive one.
    positive, negative = encode_prompt_pair(tokenizer, encoder, "猫", letters(160))
    assert positive.shape == negative.shape == [1, 231, 8]
    empty = encode_prompt(tokenizer, encoder, "").numpy()
    np.testing.assert_allclose(positive.numpy()[:, 154:], empty, atol=1e-6)


def test_pair_of_short_prompts_is_one_chunk_each(tokenizer, encoder):
    positive, negative = encode_prompt_pair(tokenizer, encoder, "(猫:1.2)", "")
    assert positive.shape == negative.shape == [1, 77, 8]


# ------------------------------------------------------------------ the project's encoders and tokenizers


@pytest.fixture
def tiny_clip():
    from stable_diffusion_chinese.text import CLIPTextEncoder
    paddle.seed(0)
    return CLIPTextEncoder.from_config(reference_config("clip_text_tiny.json")).eval()


def test_real_clip_encoder_plain_prompt_bitwise(tokenizer, tiny_clip):
    prompt = "a photo of a cat"
    ids = paddle.to_tensor(tokenizer([prompt], max_length=77)["input_ids"])
    for clip_skip in (None, 1):
        expected = tiny_clip.encode(ids, None, clip_skip=clip_skip).numpy()
        got = encode_prompt(tokenizer, tiny_clip, prompt, clip_skip=clip_skip).numpy()
        assert np.array_equal(got, expected)
    positive, negative = encode_prompt_pair(tokenizer, tiny_clip, letters(80) + "(cat:1.2)", "", clip_skip=1)
    assert positive.shape == negative.shape == [1, 154, 32]
    assert np.isfinite(positive.numpy()).all()


@pytest.mark.parametrize("folder, prompt", [
    ("tokenizer_tiny_clip", "a photo of a cat, sitting on a mat"),
    ("tokenizer_tiny_bert", "一只猫坐在窗台上，a cat"),
])
def test_chunks_are_framed_like_the_reference_tokenizers(folder, prompt):
    from transformers import AutoTokenizer  # the reference, used as it is: its interface is ours
    reference = AutoTokenizer.from_pretrained(Path(__file__).parent / "reference_configs" / folder)
    chunks = tokenize_prompt(reference, prompt)
    plain = reference([prompt], max_length=77, padding="max_length", truncation=True, return_tensors="np")
    np.testing.assert_array_equal(chunks.input_ids, plain["input_ids"])
    np.testing.assert_array_equal(chunks.attention_mask, plain["attention_mask"])

    long_prompt = ", ".join([prompt] * 8)
    ids = reference.encode(long_prompt, add_special_tokens=False)
    chunks = tokenize_prompt(reference, long_prompt)
    assert len(chunks) == -(-len(ids) // 75) > 1
    framed = reference([""], max_length=77, padding="max_length")["input_ids"][0]  # [begin, end, pad, ...]
    for row in range(len(chunks)):
        part = ids[row * 75:(row + 1) * 75]
        expected = [framed[0], *part, framed[1]] + [framed[2]] * (75 - len(part))
        assert chunks.input_ids[row].tolist() == expected


def _project_tokenizers():
    """(folder, class) of the project's tokenizers that exist yet (other helpers write them in parallel)."""
    import importlib
    found = []
    for module, name, folder in (("bert", "BertTokenizer", "tokenizer_tiny_bert"),
                                 ("clip", "CLIPTokenizer", "tokenizer_tiny_clip")):
        try:
            tokenizers = importlib.import_module(f"stable_diffusion_chinese.tokenizers.{module}")
            found.append((folder, getattr(tokenizers, name)))
        except (ImportError, AttributeError):
            pass
    return found or [pytest.param(None, None, marks=pytest.mark.skip(reason="no project tokenizer yet"))]


@pytest.mark.parametrize("folder, tokenizer_class", _project_tokenizers())
def test_project_tokenizer_chunks_like_the_reference(folder, tokenizer_class):
    from transformers import AutoTokenizer
    path = Path(__file__).parent / "reference_configs" / folder
    ours, reference = tokenizer_class.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    prompt = "一只(猫:1.3)坐在[窗台]上, a (photo:1.2) of a cat BREAK 水墨画, " * 6
    mine, theirs = tokenize_prompt(ours, prompt), tokenize_prompt(reference, prompt)
    assert len(mine) > 2
    for got, expected in zip(vars(mine).values(), vars(theirs).values()):
        np.testing.assert_array_equal(got, expected)
