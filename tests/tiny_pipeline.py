"""A tiny random Paddle pipeline folder (Chinese BERT tokenizer + tiny BERT, UNet, VAE), built without torch."""
import json
import shutil
from pathlib import Path

import paddle

from conftest import reference_config
from stable_diffusion_chinese.models.unet import UNet2DConditionModel
from stable_diffusion_chinese.models.vae import AutoencoderKL
from stable_diffusion_chinese.schedulers import make_scheduler
from stable_diffusion_chinese.text import BertTextEncoder
from stable_diffusion_chinese.tokenizers import CHINESE_VOCAB_PATH

TINY_BERT = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                 layer_norm_eps=1e-12, pad_token_id=0)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")


def write_tiny_pipeline(folder: Path, seed: int = 0, model_max_length: int = 77) -> Path:
    """A from_pretrained-loadable Paddle pipeline folder with random weights."""
    paddle.seed(seed)
    folder = Path(folder)
    UNet2DConditionModel.from_config(reference_config("unet_tiny.json")).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(reference_config("vae_tiny.json")).save_pretrained(folder / "vae")
    BertTextEncoder.from_config(TINY_BERT).save_pretrained(folder / "text_encoder")
    (folder / "tokenizer").mkdir(parents=True)
    shutil.copy(CHINESE_VOCAB_PATH, folder / "tokenizer" / "vocab.txt")
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": model_max_length}))
    make_scheduler("dpm++2m", base_config=SD15_SCHEDULER).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "BertModel"], "tokenizer": ["transformers", "BertTokenizer"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"]}))
    return folder
