"""Text encoders: prompt token ids -> embeddings for the UNet's cross-attention.

All share ``TextEncoder.encode(input_ids, attention_mask=None, *, clip_skip=None) -> [B, L, D]``.
"""
from .base import TextEncoder
from .bert import BertTextEncoder, BertTextEncoderConfig
from .clip import CLIPTextEncoder, CLIPTextEncoderConfig
from .roberta_series import RobertaSeriesTextEncoder, RobertaSeriesTextEncoderConfig

#: the reference class a diffusers ``model_index.json`` names for ``text_encoder`` -> ours
TEXT_ENCODER_CLASSES: dict[str, type[TextEncoder]] = {
    "CLIPTextModel": CLIPTextEncoder,
    "BertModel": BertTextEncoder,
    "RobertaSeriesModelWithTransformation": RobertaSeriesTextEncoder,
}


def text_encoder_class(reference_class_name: str) -> type[TextEncoder]:
    """Our encoder for a reference class name such as ``"CLIPTextModel"``."""
    if reference_class_name not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"no text encoder for {reference_class_name!r}; "
                         f"supported: {sorted(TEXT_ENCODER_CLASSES)}")
    return TEXT_ENCODER_CLASSES[reference_class_name]


__all__ = ["TextEncoder", "CLIPTextEncoder", "CLIPTextEncoderConfig", "BertTextEncoder",
           "BertTextEncoderConfig", "RobertaSeriesTextEncoder", "RobertaSeriesTextEncoderConfig",
           "TEXT_ENCODER_CLASSES", "text_encoder_class"]
