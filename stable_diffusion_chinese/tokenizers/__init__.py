"""Prompt tokenizers in pure Python, giving the same ids as transformers 5.23's tokenizers.

One interface (``base.Tokenizer``)::

    tokenizer = load_tokenizer("path/to/pipeline/tokenizer")
    batch = tokenizer(["水墨风格山水画", "a cat"])        # pads/truncates to tokenizer.model_max_length
    batch["input_ids"], batch["attention_mask"]           # numpy int64 [2, L]
    tokenizer.encode("一只猫")                             # list of ids with start/end tokens, unpadded

``BertTokenizer`` (Taiyi, WordPiece; ships the 21128-token Chinese vocab), ``CLIPTokenizer`` (SD 1.x/2.x,
byte-level BPE; ``sd1_clip_tokenizer()`` is SD 1.x's, built from the shipped OpenAI merges file),
``XLMRobertaTokenizer`` (AltDiffusion, SentencePiece unigram).
"""
from .auto import TOKENIZER_CLASSES, load_tokenizer
from .base import Tokenizer
from .bert import CHINESE_VOCAB_PATH, BertTokenizer
from .clip import CLIPTokenizer, sd1_clip_tokenizer, write_sd1_clip_tokenizer
from .xlm_roberta import XLMRobertaTokenizer

__all__ = ["Tokenizer", "BertTokenizer", "CLIPTokenizer", "XLMRobertaTokenizer", "load_tokenizer",
           "TOKENIZER_CLASSES", "CHINESE_VOCAB_PATH", "sd1_clip_tokenizer", "write_sd1_clip_tokenizer"]
