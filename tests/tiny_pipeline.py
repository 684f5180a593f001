"""A tiny random Paddle pipeline folder, small enough for 64x64 images in a fraction of a second.

Chinese BERT vocabulary (the embedded model's tokenizer, 48 tokens), a VAE that downsamples by 8 (64x64
images are 8x8 latents), the embedded model's scheduler settings. Built without torch.
"""
import json
import shutil
from pathlib import Path

EMBEDDED = Path(__file__).resolve().parent.parent / "stable_diffusion_chinese" / "assets" / "embedded"

TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=1,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=32, attention_head_dim=8,
                 norm_num_groups=8)
TINY_VAE = dict(in_channels=3, out_channels=3, sample_size=64, block_out_channels=[8, 8, 16, 16],
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=1, latent_channels=4, norm_num_groups=4, scaling_factor=0.18215)
TINY_BERT = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
                 pad_token_id=0)
MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
               "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "BertModel"],
               "tokenizer": ["transformers", "BertTokenizer"],
               "scheduler": ["diffusers", "DPMSolverMultistepScheduler"]}


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A ``StableDiffusionPipeline.from_pretrained``-loadable Paddle folder with random weights."""
    import paddle

    from stable_diffusion_chinese.models.unet import UNet2DConditionModel
    from stable_diffusion_chinese.models.vae import AutoencoderKL
    from stable_diffusion_chinese.text import BertTextEncoder

    paddle.seed(seed)
    folder = Path(folder)
    UNet2DConditionModel.from_config(TINY_UNET).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(TINY_VAE).save_pretrained(folder / "vae")
    BertTextEncoder.from_config(TINY_BERT).save_pretrained(folder / "text_encoder")
    # the embedded model's tokenizer (Chinese BERT vocabulary) and scheduler settings
    shutil.copytree(EMBEDDED / "tokenizer", folder / "tokenizer")
    shutil.copytree(EMBEDDED / "scheduler", folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX), encoding="utf-8")
    return folder
