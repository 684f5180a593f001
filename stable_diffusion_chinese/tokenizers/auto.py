"""``load_tokenizer(folder)``: the right tokenizer class for a pipeline's ``tokenizer/`` folder."""
from __future__ import annotations

import os

from .base import Tokenizer
from .bert import BertTokenizer
from .clip import CLIPTokenizer
from .folder import TokenizerFolder
from .xlm_roberta import MODEL_FILE, XLMRobertaTokenizer

#: ``tokenizer_class`` values of tokenizer_config.json -> our class
TOKENIZER_CLASSES: dict[str, type[Tokenizer]] = {
    "BertTokenizer": BertTokenizer, "BertTokenizerFast": BertTokenizer,
    "CLIPTokenizer": CLIPTokenizer, "CLIPTokenizerFast": CLIPTokenizer,
    "XLMRobertaTokenizer": XLMRobertaTokenizer, "XLMRobertaTokenizerFast": XLMRobertaTokenizer,
}
_MODEL_TYPES = {"WordPiece": BertTokenizer, "BPE": CLIPTokenizer}


def load_tokenizer(folder: str | os.PathLike) -> Tokenizer:
    """The config's ``tokenizer_class`` decides; without one, the files present do."""
    files = TokenizerFolder(folder)
    name = files.config.get("tokenizer_class")
    if name is not None:
        if name not in TOKENIZER_CLASSES:
            raise ValueError(f"{files.path}: tokenizer_class {name!r} is not supported "
                             f"(supported: {sorted(TOKENIZER_CLASSES)})")
        return TOKENIZER_CLASSES[name].from_pretrained(folder)
    return tokenizer_class_from_files(files).from_pretrained(folder)


def tokenizer_class_from_files(files: TokenizerFolder) -> type[Tokenizer]:
    if files.file(MODEL_FILE):
        return XLMRobertaTokenizer
    if files.file("vocab.json") and files.file("merges.txt"):
        return CLIPTokenizer
    if files.file("vocab.txt"):
        return BertTokenizer
    model_type = ((files.tokenizer_json() or {}).get("model") or {}).get("type")
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    raise FileNotFoundError(
        f"{files.path} holds no tokenizer we can read: expected vocab.txt (BERT), vocab.json + merges.txt "
        f"(CLIP), {MODEL_FILE} (XLM-RoBERTa), or a WordPiece/BPE tokenizer.json")
