"""Build, save and load the networks of a text-to-image model folder (diffusers layout).

``EMBEDDED_DIR`` (``assets/embedded``) holds the embedded model's configs and, once trained, its weights.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import paddle

from ..json_files import read_json_object as read_json
from ..models.unet import UNet2DConditionModel
from ..models.vae import AutoencoderKL
from ..text.bert import BertTextEncoder
from ..tokenizers.bert import BertTokenizer

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "assets" / "embedded"
WEIGHTS_FILE = "model.pdparams"
NETWORKS = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": BertTextEncoder}


def build_network(name: str, folder: str | Path = EMBEDDED_DIR, seed: int = 0, config_file: str | Path | None = None):
    """A freshly initialised network from ``folder/<name>/config.json`` (seeded).

    The UNet and VAE keep Paddle's default initialisers. The text encoder is initialised as
    transformers' ``BertPreTrainedModel._init_weights`` does (normal(0, 0.02) for every Linear and
    Embedding, zero biases): Paddle's default for ``nn.Embedding`` is Xavier, which for a 21128 x 128
    table is std 0.0097 against 0.1 for the 64 x 128 position table, so after the embedding LayerNorm
    a caption's words were ~1 % of the signal and every caption encoded to nearly the same vectors
    (a first 1600-step run learned no text conditioning at all because of it).
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    paddle.seed(seed)
    config_file = Path(config_file) if config_file else Path(folder) / name / "config.json"
    layer = NETWORKS[name].from_config(read_json(config_file))
    if name == "text_encoder":
        init_like_bert(layer)
    return layer


def grow_unet(weights_folder: str | Path, config_file: str | Path, seed: int = 0) -> UNet2DConditionModel:
    """``weights_folder``'s trained UNet inside the architecture of ``config_file``, which may only add
    transformer (attention) blocks to levels that had none, e.g. a ``DownBlock2D`` made ``CrossAttnDownBlock2D``.

    Every trained weight must find its place with its shape. An added transformer is a residual branch
    (``x + proj_out(...)``), so its ``proj_out`` starts at zero and the grown UNet computes exactly what the
    trained one did; training grows the new branches from there (zero-initialised added layers, as
    ControlNet's zero convolutions and GLIGEN's gated layers start theirs)."""
    trained = UNet2DConditionModel.from_pretrained(weights_folder)
    grown = build_network("unet", seed=seed, config_file=config_file)
    old, new = trained.state_dict(), grown.state_dict()
    misfits = sorted(k for k, v in old.items() if k not in new or new[k].shape != v.shape)
    if misfits:
        raise ValueError(f"{config_file} does not hold the UNet of {weights_folder}: {len(misfits)} trained "
                         f"weights have no place of their shape in it, e.g. {misfits[:3]}")
    added = [k for k in new if k not in old]
    trained_blocks = {_attention_block(k) for k in old} - {None}
    not_new_blocks = [k for k in added if _attention_block(k) in trained_blocks | {None}]
    if not_new_blocks:
        raise ValueError(f"{config_file} adds layers other than whole new attention blocks (they would change what "
                         f"the trained UNet computes), e.g. {not_new_blocks[:3]}")
    grown.set_state_dict({**new, **old})   # the added layers keep their own initialisation
    for key in added:
        if re.search(r"\.attentions\.\d+\.proj_out\.", key):
            new[key].set_value(paddle.zeros_like(new[key]))
    return grown


def _attention_block(key: str) -> str | None:
    """``down_blocks.2.attentions.0`` for any weight inside that transformer, else None."""
    found = re.match(r"(.*\.attentions\.\d+)\.", key)
    return found.group(1) if found else None


def init_like_bert(layer: paddle.nn.Layer, std: float = 0.02) -> None:
    """normal(0, std) weights for Linear and Embedding, zero biases; LayerNorms stay 1 / 0."""
    normal = paddle.nn.initializer.Normal(mean=0.0, std=std)
    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, (paddle.nn.Linear, paddle.nn.Embedding)):
            normal(sub.weight)
            if getattr(sub, "bias", None) is not None:
                paddle.nn.initializer.Constant(0.0)(sub.bias)


def load_tokenizer(folder: str | Path = EMBEDDED_DIR) -> BertTokenizer:
    return BertTokenizer.from_pretrained(Path(folder) / "tokenizer")


def save_network(layer, folder: str | Path, fp16: bool = False, extra_config: dict | None = None) -> int:
    """Write ``config.json`` + ``model.pdparams``; ``fp16`` stores float weights as float16 (halves the
    size; the loaders cast back to the layer's float32 when loading). Returns the bytes written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**layer.config.to_dict(), **(extra_config or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    state = {}
    for key, value in layer.state_dict().items():
        array = value.numpy()
        state[key] = array.astype(np.float16) if fp16 and array.dtype == np.float32 else array
    paddle.save(state, str(folder / WEIGHTS_FILE))
    return (folder / WEIGHTS_FILE).stat().st_size


CONFIG_EXTRAS = {"unet": {"_class_name": "UNet2DConditionModel"}, "vae": {"_class_name": "AutoencoderKL"},
                 "text_encoder": {"model_type": "bert", "architectures": ["BertModel"]}}


def check_pipeline_folders(*folders: Path) -> None:
    """Each of ``folders`` holds a UNet's weights, or an error naming it (a VAE or run folder given by mistake)."""
    for folder in folders:
        if not (Path(folder) / "unet" / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} has no unet/{WEIGHTS_FILE}; is it a pipeline folder?")


def check_new_folder(out_dir: Path, what: str) -> None:
    """``out_dir`` is missing or empty: files already in it would stay beside the new ``what``'s."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not empty; write the {what} to a new folder")


def export_pipeline(out_dir: str | Path, networks: dict, template: str | Path = EMBEDDED_DIR,
                    fp16: bool = True) -> dict[str, int]:
    """A loadable pipeline folder: the networks' weights plus tokenizer, scheduler and model_index from ``template``."""
    out_dir, template = Path(out_dir), Path(template)
    sizes = {name: save_network(layer, out_dir / name, fp16, CONFIG_EXTRAS.get(name)) for name, layer in networks.items()}
    if out_dir.resolve() != template.resolve():
        for part in ("tokenizer", "scheduler"):
            shutil.copytree(template / part, out_dir / part, dirs_exist_ok=True)
        shutil.copy(template / "model_index.json", out_dir / "model_index.json")
    return sizes
