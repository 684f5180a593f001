"""SD 1.x's CLIP tokenizer built from the shipped OpenAI merges file (assets/clip_bpe_simple_vocab_16e6.txt.gz).

Known ids of openai/clip-vit-large-patch14 pin the derived vocabulary to the real one; the folder we write is
read by transformers' CLIPTokenizer and must give our ids on the tokenizer tests' 240 mixed strings.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stable_diffusion_chinese.tokenizers import CLIPTokenizer, load_tokenizer, sd1_clip_tokenizer, \
    write_sd1_clip_tokenizer
from stable_diffusion_chinese.tokenizers.clip import SD1_BPE_PATH, read_clip_bpe_file
from test_tokenizers import TEXTS, assert_batch_parity, assert_encode_parity

BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"   # open_clip_torch 3.3.0's copy
A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.fixture(scope="module")
def ours() -> CLIPTokenizer:
    return sd1_clip_tokenizer()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_sd1_clip_tokenizer(tmp_path_factory.mktemp("sd1") / "tokenizer")


def test_shipped_merges_file_is_openai_clips():
    assert hashlib.sha256(Path(SD1_BPE_PATH).read_bytes()).hexdigest() == BPE_SHA256


def test_derived_vocabulary_has_clips_ids(ours):
    vocab, merges = read_clip_bpe_file()
    assert len(vocab) == 49408 and len(merges) == 49152 - 256 - 2
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["a</w>"] == 320
    assert vocab["!</w>"] == 256 and vocab["in"] == 512   # bytes with </w> follow bytes; the first merge is "i n"
    assert sorted(vocab.values()) == list(range(49408))
    assert (ours.vocab_size, ours.model_max_length, ours.pad_token_id) == (49408, 77, 49407)


def test_a_photo_of_a_cat(ours):
    assert ours.encode("a photo of a cat") == A_PHOTO_OF_A_CAT
    batch = ours(["a photo of a cat"])
    assert batch["input_ids"].tolist() == [A_PHOTO_OF_A_CAT + [49407] * (77 - 7)]
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0] * (77 - 7)]


def test_written_folder_is_a_standard_tokenizer_folder(written, ours):
    assert sorted(p.name for p in written.iterdir()) == ["merges.txt", "special_tokens_map.json",
                                                         "tokenizer_config.json", "vocab.json"]
    lines = (written / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[1] == "i n" and len(lines) == 1 + 48894 + 1 and lines[-1] == ""
    assert json.loads((written / "vocab.json").read_text(encoding="utf-8")) == ours.vocab
    config = json.loads((written / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "CLIPTokenizer" and config["model_max_length"] == 77
    assert config["pad_token"] == "<|endoftext|>"
    assert json.loads((written / "special_tokens_map.json").read_text(encoding="utf-8"))["pad_token"] == "<|endoftext|>"


def test_transformers_reads_our_folder_and_agrees(written, ours):
    from transformers import CLIPTokenizer as ReferenceClip
    reference = ReferenceClip.from_pretrained(written)
    assert len(reference) == 49408 and reference.get_vocab() == ours.vocab
    assert (reference.pad_token_id, reference.model_max_length) == (49407, 77)
    assert reference("a photo of a cat")["input_ids"] == A_PHOTO_OF_A_CAT
    assert len(TEXTS) == 240
    assert_batch_parity(ours, reference, TEXTS, max_length=77)
    assert_batch_parity(ours, reference, TEXTS, max_length=10)
    assert_encode_parity(ours, reference, TEXTS)
    # CLIP's merges fire on these texts: many ids beyond the 512 single-byte tokens
    assert sum(i >= 512 for t in TEXTS for i in ours.encode(t)[1:-1]) > 1000


def test_our_folder_loader_reads_the_written_folder_alike(written, ours):
    loaded = load_tokenizer(written)
    assert isinstance(loaded, CLIPTokenizer) and loaded.pad_token_id == ours.pad_token_id
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(loaded(TEXTS)[key], ours(TEXTS)[key])


def test_bad_merges_files_are_named(tmp_path):
    (tmp_path / "plain.txt.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="plain.txt.gz is not a gzip-compressed CLIP BPE merges file"):
        read_clip_bpe_file(tmp_path / "plain.txt.gz")
    with gzip.open(tmp_path / "short.txt.gz", "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match="holds 2 merges after its header; SD 1.x's tokenizer uses the first 48894"):
        sd1_clip_tokenizer(tmp_path / "short.txt.gz")
