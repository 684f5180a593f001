"""XLM-RoBERTa SentencePiece tokenizer (AltDiffusion), equal to transformers 5.23's XLMRobertaTokenizer.

transformers 5 converts ``sentencepiece.bpe.model`` (a unigram model despite the name) into a
``tokenizers`` pipeline, which we follow (tokenization_utils_tokenizers.py ``_convert_from_sentencepiece``,
convert_slow_tokenizer.py ``XLMRobertaConverter``, models/xlm_roberta/tokenization_xlm_roberta.py):

* normalize with the model's precompiled character map only (NFKC and friends; no whitespace rules);
* split on Unicode whitespace, put ``▁`` before every word, split again before every ``▁`` (Metaspace);
* segment each piece with the unigram model (``unigram.py``) over fairseq's vocabulary: ``<s>``=0,
  ``<pad>``=1, ``</s>``=2, ``<unk>``=3, sentencepiece piece i>=3 -> i+1, ``<mask>`` last. Unlike raw
  sentencepiece, those five strings are ordinary pieces there (score 0), so text that normalizes to
  ``<mask>`` (e.g. full-width ``＜ｍａｓｋ＞``) becomes the mask id;
* frame as ``<s> ... </s>``, pad with ``<pad>`` = 1.

The ``sentencepiece`` package reads the pieces and scores; the character map is applied by
``precompiled_charsmap.py`` because tokenizers applies it differently from sentencepiece.
"""
from __future__ import annotations

import os
import re

import sentencepiece

from . import unicode_tables
from .base import Tokenizer
from .folder import TokenizerFolder, TokenSettings
from .precompiled_charsmap import PrecompiledCharsmap
from .unigram import UnigramModel

MODEL_FILE = "sentencepiece.bpe.model"
DEFAULT_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                  "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
#: XLM-R's 514 positions minus the 2 of fairseq's padding offset
DEFAULT_MAX_LENGTH = 512
#: sentencepiece's own reserved pieces (<unk>, <s>, </s>) that fairseq's four specials replace
_SPM_RESERVED = 3
_WHITE_SPACE = re.compile("[" + unicode_tables.WHITE_SPACE.regex_class() + "]+")
_METASPACE = "\u2581"
_BEFORE_METASPACE = re.compile("(?=\u2581)")


class XLMRobertaTokenizer(Tokenizer):
    """SentencePiece unigram with fairseq ids; see the module docstring."""

    def __init__(self, model_file: str | os.PathLike, *, model_max_length: int = DEFAULT_MAX_LENGTH,
                 tokens: TokenSettings | None = None):
        path = os.fspath(model_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"sentencepiece model not found: {path}")
        processor = sentencepiece.SentencePieceProcessor(model_file=path)
        self._char_map = PrecompiledCharsmap.from_model_file(path)
        self.tokens = tokens or TokenSettings.from_names(DEFAULT_TOKENS)
        named = self.tokens.named
        # transformers' XLMRobertaConverter.convert_from_spm: the configured token strings name the specials
        pieces = [(named["bos_token"], 0.0), (named["pad_token"], 0.0), (named["eos_token"], 0.0),
                  (named["unk_token"], 0.0)]
        pieces += [(processor.id_to_piece(i), processor.get_score(i))
                   for i in range(_SPM_RESERVED, processor.get_piece_size())]
        pieces.append((named["mask_token"], 0.0))
        self._model = UnigramModel(pieces, unk_id=3)
        ids = self._model.ids
        super().__init__(vocab_size=len(pieces), model_max_length=model_max_length,
                         pad_token_id=ids[named["pad_token"]], prefix_ids=[ids[named["bos_token"]]],
                         suffix_ids=[ids[named["eos_token"]]], added_tokens=self.tokens.resolve(ids.get))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "XLMRobertaTokenizer":
        """A ``tokenizer/`` folder with ``sentencepiece.bpe.model`` and its configs."""
        files = TokenizerFolder(folder)
        (model_file,) = files.require(MODEL_FILE)
        return cls(model_file, model_max_length=files.model_max_length(DEFAULT_MAX_LENGTH),
                   tokens=files.token_settings(DEFAULT_TOKENS))

    def _normalize(self, text: str) -> str:
        return text if self._char_map is None else self._char_map.normalize(text)

    def _normalized_to_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in _WHITE_SPACE.split(text):
            if not word:
                continue
            if not word.startswith(_METASPACE):
                word = _METASPACE + word
            for piece in _BEFORE_METASPACE.split(word):
                if piece:
                    ids.extend(self._model.encode(piece))
        return ids
