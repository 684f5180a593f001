"""``hub serving start -m stable_diffusion_chinese``: real HTTP requests, good and bad, to a real server on a
free loopback port (own process group, always killed), and the ``serving_config.json`` example."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hub_fixtures import FAST, MODULE, isolated_env, post, served_module, write_tiny_model
from stable_diffusion_chinese.pipelines.metadata import JSON_KEY, parse_json_text
from stable_diffusion_chinese.service import Settings, TextToImage, style_names

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "modules" / "serving_config.json"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def tiny_model(workspace):
    return write_tiny_model(workspace / "tiny")


@pytest.fixture(scope="module")
def server(workspace, tiny_model):
    env = isolated_env(workspace / "iso", tiny_model)
    with served_module(env, workspace) as url:
        yield url


@pytest.fixture(scope="module")
def engine(tiny_model, workspace):
    return TextToImage(model=tiny_model, settings=Settings(workspace / "sd_home", {}))


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_generate_returns_png_and_parameters(server, engine):
    request = {"text": ["一只猫", "a cat on a 小桥"], "style": "水墨", "negative_text": "模糊", "seed": 0, **FAST}
    status, reply = post(server, request)
    assert status == 200 and reply["status"] == "000", reply
    results = reply["results"]
    images = [decode(data) for data in results["images"]]
    assert [im.format for im in images] == ["PNG", "PNG"] and all(im.size == (64, 64) for im in images)
    params = results["parameters"]
    assert [p["seed"] for p in params] == [0, 1]
    assert [p["style"] for p in params] == ["水墨", "水墨"] and params[0]["steps"] == 2 and params[0]["cfg_scale"] == 7.5
    assert params[0]["prompt"].startswith("一只猫，水墨画") and params[0]["negative_prompt"].startswith("模糊，")
    assert results["model"] == "tiny"
    # each PNG carries the same parameters, and the pixels are what the engine makes here for the same request
    assert [parse_json_text(im.text[JSON_KEY]).seed for im in images] == [0, 1]
    local = engine.generate(["一只猫", "a cat on a 小桥"], style="水墨", negative_text="模糊", seed=0, progress=False,
                            **FAST)
    for got, expected in zip(images, local.images):
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))


def test_random_seed_is_reported_and_reproduces(server):
    status, first = post(server, {"text": "远山", **FAST})
    seed = first["results"]["parameters"][0]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2 ** 32
    _, again = post(server, {"text": "远山", "seed": seed, **FAST})
    assert again["results"]["images"] == first["results"]["images"]


def test_listings(server):
    _, styles = post(server, {"list": "styles"})
    assert [s["name"] for s in styles["results"]["styles"]] == style_names()
    assert all(s["prompt"] and s["negative"] for s in styles["results"]["styles"])
    _, schedulers = post(server, {"list": "schedulers"})
    assert "dpm++2m_karras" in schedulers["results"]["schedulers"]
    _, limits = post(server, {"list": "limits"})
    assert limits["results"]["limits"]["max_steps"] == 150


# every bad request tried, and words its status-"101" message must contain
BAD_REQUESTS = [
    ({"style": "水墨"}, "the request has no 'text'"),
    ({"text": "猫", "style": "莫奈"}, "unknown style '莫奈'; valid styles: 古风, 油画"),
    ({"text": "猫", "width": 65, "height": 64}, "width=65 is not a multiple of 8 (try 64)"),
    ({"text": "猫", "width": 2048, "height": 2048}, "2048x2048 is 4194304 pixels, more than the limit of 1048576"),
    ({"text": "猫", "width": 4096}, "width=4096 is out of range: it must be from 64 to 2048"),
    ({"text": "猫", "steps": 1000}, "steps=1000 is out of range: it must be from 1 to 150"),
    ({"text": "猫", "steps": "20"}, "steps must be an integer, got '20'"),
    ({"text": "猫", "width": 64.0}, "width must be an integer, got 64.0"),
    ({"text": 123}, "text must be a string or a list of strings, got int 123"),
    ({"text": ["猫", None]}, "text must be a string or a list of strings, got a list holding NoneType"),
    ({"text": "猫", "seed": -1}, "seed=-1 is out of range: it must be from 0 to 4294967295"),
    ({"text": "猫", "guidance": "high"}, "guidance must be a number, got 'high'"),
    ({"text": "猫", "num_images": 100}, "num_images=100 is out of range: it must be from 1 to 8"),
    ({"text": "猫", "scheduler": "fast"}, "unknown scheduler 'fast'; valid schedulers:"),
    ({"text": "猫", "stpes": 20}, "unknown request key(s) 'stpes'; accepted keys: text, style"),
    ({"text": "猫", "model": "/etc"}, "'model' is not accepted in a request: the server chooses its model"),
    ({"text": "猫", "output_dir": "/tmp/x"}, "'output_dir' is not accepted in a request: the server writes no files"),
    ({"list": "models"}, "'list' must be one of styles, schedulers, limits, got 'models'"),
    ({"text": "猫", "image": 5}, "'image' must be a base64-encoded image file (PNG or JPEG; a server reads no paths)"),
    ({"text": "猫", "image": "/etc/passwd"}, "'image' is not valid base64"),
    ({"text": "猫", "image": base64.b64encode(b"hello").decode()}, "'image' decodes to bytes that are not an image"),
    ({"text": "猫", "strength": 0.5}, "strength needs an image"),
]


@pytest.mark.parametrize("body, message", BAD_REQUESTS, ids=[m[:40] for _, m in BAD_REQUESTS])
def test_bad_request_is_status_101_naming_the_problem(server, body, message):
    status, reply = post(server, body)
    assert status == 200 and reply["status"] == "101" and reply["results"] == ""
    assert message in reply["msg"], reply["msg"]


def test_image_to_image_and_inpainting_requests(server, engine):
    """``image`` / ``mask`` as base64 PNGs: the pixels and parameters the engine gives for the same images."""
    rng = np.random.default_rng(0)
    start = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[32:, :] = 255

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    for extra, local in (({"strength": 0.5}, dict(strength=0.5)), ({"mask": png(mask)}, dict(mask=mask))):
        status, reply = post(server, {"text": "一只猫", "seed": 2, "steps": 4, "image": png(start), **extra})
        assert status == 200 and reply["status"] == "000", reply
        expected = engine.generate("一只猫", seed=2, steps=4, image=start, progress=False, **local)
        got = decode(reply["results"]["images"][0])
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected.images[0]))
        assert reply["results"]["parameters"][0]["strength"] == expected.params[0].strength


def test_server_keeps_serving_after_bodies_paddlehub_itself_rejects(server):
    # PaddleHub merges the body into a dict before calling the module: an array never reaches us (HTTP 500)
    status, _ = post(server, [1, 2])
    assert status == 500
    status, _ = post(server, b"text=cat", content_type="text/plain")
    assert status == 415  # Flask refuses a body that is not JSON before PaddleHub sees it
    status, _ = post(server, b"{not json")
    assert status == 400
    status, reply = post(server, {"text": "还在吗", "seed": 0, **FAST})
    assert status == 200 and reply["status"] == "000" and len(reply["results"]["images"]) == 1


def test_serving_config_example(workspace, tiny_model):
    """modules/serving_config.json as shipped, with only the port and model changed."""
    config = json.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    from hub_fixtures import free_port

    config["port"] = free_port()
    config["modules_info"][MODULE]["init_args"]["model"] = str(tiny_model)
    path = workspace / "serving_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    env = isolated_env(workspace / "iso_config", None)
    with served_module(env, workspace, "--config", str(path)) as url:
        _, limits = post(url, {"list": "limits"})
        assert limits["results"]["limits"] == {**limits["results"]["limits"], "max_steps": 50, "max_images": 4,
                                               "max_pixels": 589824}
        _, reply = post(url, {"text": "猫", "steps": 60})
        assert reply["status"] == "101" and "steps=60 is out of range: it must be from 1 to 50" in reply["msg"]
        _, reply = post(url, {"text": "猫", "seed": 5, **FAST})
        assert reply["status"] == "000" and reply["results"]["parameters"][0]["seed"] == 5
