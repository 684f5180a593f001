"""Generation parameters <-> A1111 infotext <-> PNG text chunks, and atomic PNG saving."""
import json
import os
import stat

import pytest
from PIL import Image, PngImagePlugin

from stable_diffusion_chinese.pipelines.metadata import (
    GenerationParams,
    parse_a1111_text,
    read_png_params,
    save_png,
    to_a1111_text,
)


def params(**changes):
    base = dict(prompt="a cat", negative_prompt="ugly", steps=20, sampler="Euler a", cfg_scale=7.5, seed=42,
                width=512, height=512, model="sd15")
    base.update(changes)
    return GenerationParams(**base)


# --------------------------------------------------------------------------------- A1111 infotext


def test_a1111_text_format():
    assert to_a1111_text(params()) == (
        "a cat\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15")


def test_a1111_text_omits_empty_negative_and_unset_fields():
    assert to_a1111_text(params(negative_prompt="", model=None, width=768)) == (
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 768x512")


def test_a1111_text_optional_fields_in_a1111_order():
    text = to_a1111_text(params(strength=0.75, clip_skip=2, eta=0.0, style="水墨画",
                                extra={"Model hash": "45dee52b"}))
    # clip_skip=2 is diffusers' count; A1111 counts from 1 and writes 3
    assert text.endswith("Model: sd15, Denoising strength: 0.75, Clip skip: 3, Eta: 0.0, Style: 水墨画, "
                         "Model hash: 45dee52b")


def test_a1111_quoting():
    text = to_a1111_text(params(sampler="DPM++ 2M, Karras", model="taiyi:v1"))
    assert 'Sampler: "DPM++ 2M, Karras"' in text  # A1111 JSON-quotes values holding , : or a newline
    assert 'Model: "taiyi:v1"' in text
    assert 'Model: "\\"q\\""' in to_a1111_text(params(model='"q"'))  # would be unquoted on reading otherwise


ROUND_TRIPS = [
    params(),
    params(prompt="一只猫，坐在窗台上，(水墨画:1.3)\n第二行：夕阳 🌅, \"引号\"",
           negative_prompt="模糊，低质量\n多余的手指 😱"),
    params(prompt="", negative_prompt="only negative"),
    params(prompt="trailing newline\n", negative_prompt=" leading space, and \\backslash"),
    params(prompt="BREAK (a:1.2) [b] \\(c\\)", negative_prompt=""),
    params(prompt="odd\u2028line\rseparators\x85", negative_prompt="tab\there"),
    params(sampler="DPM++ 2M Karras", cfg_scale=7.0, seed=-1, width=64, height=1024, model=None),
    params(model="", sampler=" spaced ", strength=0.3, clip_skip=0, eta=1.0, style="赛博朋克, 霓虹",
           extra={"Model hash": "45dee52b", "备注": "含有, 逗号: 和\n换行 \"quotes\" 🎨", "Empty": ""}),
]


@pytest.mark.parametrize("original", ROUND_TRIPS)
def test_a1111_round_trip_is_exact(original):
    assert parse_a1111_text(to_a1111_text(original)) == original


def test_parse_a1111s_own_docstring_example():
    # modules/infotext_utils.py parse_generation_parameters docstring, as A1111 writes it
    text = ("girl with an artist's beret, determined, blue eyes, desert scene, ((eyeshadow)), (coquettish)\n"
            "Negative prompt: ugly, fat, obese, (((deformed))), [blurry], bad anatomy\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b")
    parsed = parse_a1111_text(text)
    assert parsed == GenerationParams(
        prompt="girl with an artist's beret, determined, blue eyes, desert scene, ((eyeshadow)), (coquettish)",
        negative_prompt="ugly, fat, obese, (((deformed))), [blurry], bad anatomy",
        steps=20, sampler="Euler a", cfg_scale=7.0, seed=965400086, width=512, height=512,
        extra={"Model hash": "45dee52b"})


def test_a1111_clip_skip_counts_from_one():
    text = "p\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Clip skip: 2"
    assert parse_a1111_text(text).clip_skip == 1  # A1111's "Clip skip: 2" = the penultimate layer
    assert "Clip skip: 1," in to_a1111_text(params(clip_skip=0, style="x"))


def test_parse_a1111_errors():
    with pytest.raises(ValueError, match="no settings line"):
        parse_a1111_text("just a prompt")
    with pytest.raises(ValueError, match="lacks Seed, Size"):
        parse_a1111_text("p\nSteps: 20, Sampler: Euler, CFG scale: 7")
    with pytest.raises(ValueError, match="Steps 'many' is not a valid int"):
        parse_a1111_text("p\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512")
    with pytest.raises(ValueError, match="Size must look like 512x512"):
        parse_a1111_text("p\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: big")


def test_params_validation():
    with pytest.raises(TypeError, match="steps must be int"):
        params(steps="20")
    with pytest.raises(TypeError, match="seed must be int"):
        params(seed=True)
    with pytest.raises(ValueError, match="width must be >= 1"):
        params(width=0)
    with pytest.raises(ValueError, match="clip_skip must be >= 0"):
        params(clip_skip=-1)
    with pytest.raises(ValueError, match="one of GenerationParams' own fields"):
        params(extra={"Seed": "1"})
    with pytest.raises(ValueError, match="not a valid infotext label"):
        params(extra={"bad:label": "x"})
    with pytest.raises(TypeError, match=r"extra\['Count'\] must be a str"):
        params(extra={"Count": 3})


# ------------------------------------------------------------------------------------------ PNG files


def chunk_types(path):
    """(type, keyword) of each text chunk, read straight from the PNG bytes."""
    data, found, pos = open(path, "rb").read(), [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8].decode("ascii")
        if kind in ("tEXt", "iTXt", "zTXt"):
            found.append((kind, data[pos + 8:pos + 8 + length].split(b"\0", 1)[0].decode("latin-1")))
        pos += 12 + length
    return found


def test_png_round_trip_chinese_uses_itxt(tmp_path):
    original = ROUND_TRIPS[1]
    path = save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "猫.png", original)
    assert read_png_params(path) == original
    assert chunk_types(path) == [("iTXt", "parameters"), ("iTXt", "sd_chinese_params")]
    with Image.open(path) as image:
        assert image.text["parameters"] == to_a1111_text(original)
        assert image.size == (8, 8) and image.getpixel((0, 0)) == (255, 0, 0)


def test_png_latin1_uses_text_chunks(tmp_path):
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "a.png", params())
    assert chunk_types(path) == [("tEXt", "parameters"), ("tEXt", "sd_chinese_params")]
    assert read_png_params(path) == params()


def test_png_json_keeps_what_a1111_text_cannot(tmp_path):
    tricky = params(prompt="  leading spaces\nNegative prompt: inside the prompt")
    assert parse_a1111_text(to_a1111_text(tricky)) != tricky  # the limit of A1111's format...
    assert read_png_params(save_png(Image.new("L", (4, 4)), tmp_path / "t.png", tricky)) == tricky  # ...not ours


def test_read_prefers_json_then_falls_back_to_a1111_text(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", to_a1111_text(params(seed=1)))
    info.add_text("sd_chinese_params", json.dumps({"version": 1, "params": vars(params(seed=2))}))
    Image.new("RGB", (4, 4)).save(tmp_path / "both.png", pnginfo=info)
    assert read_png_params(tmp_path / "both.png").seed == 2

    a1111_only = PngImagePlugin.PngInfo()
    a1111_only.add_itxt("parameters", to_a1111_text(ROUND_TRIPS[1]))
    Image.new("RGB", (4, 4)).save(tmp_path / "a1111.png", pnginfo=a1111_only)
    assert read_png_params(tmp_path / "a1111.png") == ROUND_TRIPS[1]


def test_read_errors(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "bare.png")
    with pytest.raises(ValueError, match="holds no generation parameters"):
        read_png_params(tmp_path / "bare.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.jpg")
    with pytest.raises(ValueError, match="is a JPEG image, not a PNG"):
        read_png_params(tmp_path / "photo.jpg")
    bad = PngImagePlugin.PngInfo()
    bad.add_text("sd_chinese_params", json.dumps({"version": 99, "params": {}}))
    Image.new("RGB", (4, 4)).save(tmp_path / "future.png", pnginfo=bad)
    with pytest.raises(ValueError, match="not a version-1 record"):
        read_png_params(tmp_path / "future.png")
    unknown = PngImagePlugin.PngInfo()
    unknown.add_text("sd_chinese_params", json.dumps({"version": 1, "params": {**vars(params()), "lora": "x"}}))
    Image.new("RGB", (4, 4)).save(tmp_path / "unknown.png", pnginfo=unknown)
    with pytest.raises(ValueError, match=r"unknown fields \['lora'\]"):
        read_png_params(tmp_path / "unknown.png")


class SaveFailsMidway(Image.Image):
    """An image whose PNG encoder writes part of the file and then fails (a full disk, a killed process)."""

    def save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError("No space left on device")


def test_failed_save_leaves_no_file_and_no_temporary(tmp_path):
    with pytest.raises(OSError, match="No space left"):
        save_png(SaveFailsMidway(), tmp_path / "out.png", params())
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_the_previous_file(tmp_path):
    target = save_png(Image.new("RGB", (4, 4)), tmp_path / "out.png", params(seed=1))
    before = target.read_bytes()
    with pytest.raises(OSError):
        save_png(SaveFailsMidway(), target, params(seed=2))
    assert os.listdir(tmp_path) == ["out.png"]
    assert target.read_bytes() == before


def test_save_replaces_and_uses_normal_permissions(tmp_path):
    save_png(Image.new("RGB", (4, 4)), tmp_path / "out.png", params(seed=1))
    save_png(Image.new("RGB", (4, 4)), tmp_path / "out.png", params(seed=2))
    assert os.listdir(tmp_path) == ["out.png"]
    assert read_png_params(tmp_path / "out.png").seed == 2
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(os.stat(tmp_path / "out.png").st_mode) == 0o666 & ~umask


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="should end in .png"):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "out.jpg", params())
    with pytest.raises(TypeError, match="image must be a PIL.Image.Image"):
        save_png([[0]], tmp_path / "out.png", params())
    with pytest.raises(TypeError, match="params must be GenerationParams"):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "out.png", {"prompt": "a"})
    assert os.listdir(tmp_path) == []
