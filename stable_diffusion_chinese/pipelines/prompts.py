"""Weighted prompts of any length, encoded the way AUTOMATIC1111's web UI does.

Two steps:

1. ``parse_prompt_attention`` reads the emphasis syntax into ``(text, weight)`` pieces.
2. ``encode_prompt`` / ``encode_prompt_pair`` tokenize the pieces, cut the token stream into chunks of
   ``max_length - 2`` tokens (75 for CLIP's 77, 510 for BERT's 512), wrap each chunk in the tokenizer's
   begin/end tokens, pad it, encode every chunk with the text encoder, scale each token's embedding by its
   weight and concatenate the chunks along the sequence axis.

Syntax (A1111's ``modules/prompt_parser.py`` ``parse_prompt_attention``; this is our own code):

- ``(词)`` multiplies the weight by 1.1, ``[词]`` divides it by 1.1, ``(词:1.3)`` multiplies it by 1.3;
  nesting multiplies.
- The full-width forms Chinese input methods type, ``（词）`` and ``（词：1.3）``, are the same syntax.
  A full-width colon that is not part of a weight stays in the text as typed (``风格：油画``).
  ``【】`` are NOT syntax: they are ordinary Chinese brackets and stay text.
- ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\（`` ``\\）`` ``\\\\`` give the literal character. A backslash before any other
  character is dropped, as in A1111.
- Unbalanced brackets behave as in A1111: a bracket never closed applies to everything after it, a closing
  bracket with nothing open is literal text, and so is ``:1.2)`` with no ``(`` open.
- ``BREAK`` (upper case, a separate word) ends the current chunk; the next text starts a new one.

Differences from A1111, all deliberate:
- the full-width forms above;
- a malformed weight such as ``(a:1.2.3)`` raises ``ValueError`` (A1111 fails with Python's float() error);
- ``BREAK`` inside brackets still starts a new chunk (A1111 multiplies its -1 marker and then tokenizes the
  word "BREAK" as text);
- a chunk is cut hard after ``max_length - 2`` tokens. A1111 can move the words after the last comma
  within 20 tokens of the end into the next chunk (``comma_padding_backtrack``); we do not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle

# A1111's emphasis factors (modules/prompt_parser.py: round_bracket_multiplier, square_bracket_multiplier).
EMPHASIS = 1.1
DEEMPHASIS = 1 / 1.1

# The piece that marks a BREAK in parse_prompt_attention's output; the weight -1 follows A1111's marker.
BREAK_MARKER = ("BREAK", -1.0)

# Tokens of the emphasis syntax, after A1111's `re_attention`, plus the full-width （ ） ：.
_ATTENTION_TOKEN = re.compile(
    r"""
      \\[()\[\]（）\\]                       # escaped bracket or backslash: the literal character
    | \\                                     # any other backslash: dropped
    | [(（]                                  # open emphasis
    | \[                                     # open de-emphasis
    | [:：](?P<weight>[+-]?[.\d]+)[)）]        # explicit weight; closes the innermost open (
    | [)）]                                  # close emphasis
    | \]                                     # close de-emphasis
    | [^\\()\[\]:（）：]+                     # plain text
    | [:：]                                  # a colon that is not part of a weight
    """,
    re.VERBOSE,
)
# A1111's `re_break`: the keyword with the whitespace around it.
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(piece, weight)`` pairs; runs of equal weight are merged.

    >>> parse_prompt_attention("一只(猫:1.3)在[草地]上")  # doctest: +NORMALIZE_WHITESPACE
    [('一只', 1.0), ('猫', 1.3), ('在', 1.0), ('草地', 0.9090909090909091), ('上', 1.0)]

    A BREAK keyword appears as ``BREAK_MARKER``. An empty prompt gives ``[("", 1.0)]``.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    pieces: list[list[Any]] = []  # [text, weight]; weight None marks a BREAK, which no bracket scales
    open_round: list[int] = []  # index of the first piece inside each open ( ... and [ ...
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        # Multiplying at the moment a bracket closes (innermost first) gives the same floats as A1111,
        # e.g. 1.5730000000000004 for ((house:1.3)).
        for piece in pieces[start:]:
            if piece[1] is not None:
                piece[1] *= factor

    for match in _ATTENTION_TOKEN.finditer(text):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token in "(（":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif weight is not None and open_round:
            scale_from(open_round.pop(), _parse_weight(weight, text))
        elif token in ")）" and open_round:
            scale_from(open_round.pop(), EMPHASIS)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), DEEMPHASIS)
        else:
            _append_plain(pieces, token)

    # A1111: brackets left open apply to the rest of the prompt, round ones first.
    for start in open_round:
        scale_from(start, EMPHASIS)
    for start in open_square:
        scale_from(start, DEEMPHASIS)
    return _merge_equal_weights(pieces)


def _parse_weight(weight: str, prompt: str) -> float:
    try:
        return float(weight)
    except ValueError:
        raise ValueError(f"invalid emphasis weight {weight!r} in prompt {prompt!r}; write e.g. (词:1.3)") from None


def _append_plain(pieces: list[list[Any]], text: str) -> None:
    for i, part in enumerate(_BREAK.split(text)):
        if i > 0:
            pieces.append([BREAK_MARKER[0], None])
        pieces.append([part, 1.0])


def _merge_equal_weights(pieces: list[list[Any]]) -> list[tuple[str, float]]:
    merged: list[list[Any]] = []
    for text, weight in pieces:
        if merged and weight is not None and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    if not merged:
        return [("", 1.0)]
    return [BREAK_MARKER if weight is None else (text, weight) for text, weight in merged]


# ---------------------------------------------------------------------------------------------- chunking


@dataclass(frozen=True)
class PromptChunks:
    """A tokenized prompt: ``n`` rows of ``max_length`` tokens, each row one chunk ready for the encoder."""

    input_ids: np.ndarray  # int64 [n, max_length]: begin, up to max_length-2 tokens, end, padding
    attention_mask: np.ndarray  # int64 [n, max_length]: 1 from the begin token to the end token
    weights: np.ndarray  # float32 [n, max_length]: emphasis of each token; 1 for begin/end/padding

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def padded_to(self, count: int, empty: "PromptChunks") -> "PromptChunks":
        """Append copies of the one-chunk ``empty`` until there are ``count`` chunks (A1111 pads with empty chunks)."""
        missing = count - len(self)
        if missing <= 0:
            return self
        return PromptChunks(*(np.concatenate([mine, np.repeat(pad, missing, axis=0)])
                              for mine, pad in ((self.input_ids, empty.input_ids),
                                                (self.attention_mask, empty.attention_mask),
                                                (self.weights, empty.weights))))


@dataclass(frozen=True)
class _SpecialTokens:
    begin: int
    end: int
    pad: int


def _special_tokens(tokenizer: Any, max_length: int) -> _SpecialTokens:
    """Read begin/end/pad ids from how the tokenizer itself frames the empty prompt.

    CLIP frames text as <|startoftext|> .. <|endoftext|> and BERT as [CLS] .. [SEP]; asking the tokenizer
    (rather than reading attribute names that differ between the two) guarantees our chunks are framed
    exactly as a plain tokenizer call frames them.
    """
    framed = tokenizer([""], max_length=max_length, padding="max_length", truncation=True)
    ids = np.asarray(framed["input_ids"])[0]
    mask = np.asarray(framed["attention_mask"])[0]
    if ids.shape != (max_length,) or mask.tolist() != [1, 1] + [0] * (max_length - 2):
        raise ValueError(
            f"{type(tokenizer).__name__} does not frame the empty prompt as [begin, end, pad...] of length "
            f"{max_length} (got ids {ids.tolist()[:4]}..., mask {mask.tolist()[:4]}...); encode_prompt needs "
            "a tokenizer that adds one begin and one end token and pads to max_length")
    return _SpecialTokens(begin=int(ids[0]), end=int(ids[1]), pad=int(ids[2]))


def _resolve_max_length(tokenizer: Any, max_length: int | None) -> int:
    if max_length is None:
        max_length = getattr(tokenizer, "model_max_length", None)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 3:
        raise ValueError(f"max_length must be an int >= 3 (begin + at least one token + end), got {max_length!r}")
    return max_length


def tokenize_prompt(tokenizer: Any, prompt: str, *, max_length: int | None = None,
                    parse_weights: bool = True) -> PromptChunks:
    """Tokenize ``prompt`` into chunks of ``max_length`` (default ``tokenizer.model_max_length``) tokens.

    Each piece of the parsed prompt is tokenized on its own (as A1111 does), so emphasis boundaries are token
    boundaries. ``parse_weights=False`` reads the prompt literally, brackets and all.

    ``tokenizer`` needs ``encode(text, add_special_tokens=False) -> list[int]``, ``__call__(texts, max_length=,
    padding="max_length", truncation=True) -> {"input_ids", "attention_mask"}`` and ``model_max_length``:
    this project's tokenizers and transformers' both qualify.
    """
    max_length = _resolve_max_length(tokenizer, max_length)
    special = _special_tokens(tokenizer, max_length)
    pieces = parse_prompt_attention(prompt) if parse_weights else [(_checked_prompt(prompt), 1.0)]
    per_chunk = max_length - 2

    chunks: list[tuple[list[int], list[float]]] = [([], [])]
    for text, weight in pieces:
        if (text, weight) == BREAK_MARKER:
            chunks.append(([], []))
            continue
        for token in tokenizer.encode(text, add_special_tokens=False):
            ids, weights = chunks[-1]
            if len(ids) == per_chunk:
                chunks.append(([], []))
                ids, weights = chunks[-1]
            ids.append(int(token))
            weights.append(weight)
    # A1111 closes the last chunk only if it holds tokens or is the only one (a trailing BREAK adds nothing).
    if len(chunks) > 1 and not chunks[-1][0]:
        chunks.pop()
    return _framed(chunks, special, max_length)


def _checked_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return prompt


def _framed(chunks: list[tuple[list[int], list[float]]], special: _SpecialTokens, max_length: int) -> PromptChunks:
    input_ids = np.full((len(chunks), max_length), special.pad, dtype=np.int64)
    attention_mask = np.zeros((len(chunks), max_length), dtype=np.int64)
    weights = np.ones((len(chunks), max_length), dtype=np.float32)
    for row, (ids, token_weights) in enumerate(chunks):
        end = len(ids) + 1
        input_ids[row, 0] = special.begin
        input_ids[row, 1:end] = ids
        input_ids[row, end] = special.end
        attention_mask[row, : end + 1] = 1
        weights[row, 1:end] = token_weights
    return PromptChunks(input_ids, attention_mask, weights)


# ---------------------------------------------------------------------------------------------- encoding


def encode_chunks(text_encoder: Any, chunks: PromptChunks, *, clip_skip: int | None = None) -> paddle.Tensor:
    """Encode every chunk, apply the weights, and join the chunks: ``[1, n * max_length, D]``.

    The attention mask goes to the encoder only when its config says ``use_attention_mask``, diffusers'
    rule (StableDiffusionPipeline.encode_prompt): SD 1.x's CLIP and Taiyi's BERT get none, AltDiffusion's
    XLM-R gets it. ``clip_skip`` (diffusers' convention, 1 = penultimate layer) is passed on when given.
    """
    input_ids = paddle.to_tensor(chunks.input_ids)
    attention_mask = paddle.to_tensor(chunks.attention_mask) if _wants_attention_mask(text_encoder) else None
    options = {} if clip_skip is None else {"clip_skip": clip_skip}
    hidden = text_encoder.encode(input_ids, attention_mask, **options)
    if not np.all(chunks.weights == 1.0):
        hidden = _apply_emphasis(hidden, paddle.to_tensor(chunks.weights, dtype=hidden.dtype))
    count, length, dim = hidden.shape
    return hidden.reshape([1, count * length, dim])


def _wants_attention_mask(text_encoder: Any) -> bool:
    return bool(getattr(getattr(text_encoder, "config", None), "use_attention_mask", False))


def _apply_emphasis(hidden: paddle.Tensor, weights: paddle.Tensor) -> paddle.Tensor:
    """Scale each token's embedding by its weight, then restore each chunk's mean.

    A1111 ``modules/sd_emphasis.py`` ``EmphasisOriginal``: ``z = z * multipliers; z *= original_mean / new_mean``,
    applied to each 77-token chunk as it leaves the encoder. A1111's own comment: restoring the mean "is likely
    not correct, but it seems to work well to prevent artifacts".
    """
    original_mean = hidden.mean(axis=[1, 2], keepdim=True)
    weighted = hidden * weights.unsqueeze(-1)
    return weighted * (original_mean / weighted.mean(axis=[1, 2], keepdim=True))


def encode_prompt(tokenizer: Any, text_encoder: Any, prompt: str, *, max_length: int | None = None,
                  parse_weights: bool = True, clip_skip: int | None = None) -> paddle.Tensor:
    """Embeddings ``[1, L, D]`` of a weighted prompt of any length; ``L`` is a multiple of ``max_length``.

    A prompt without emphasis that fits one chunk gives exactly what plain tokenization (padded to
    ``max_length``) followed by ``text_encoder.encode`` gives (see ``encode_chunks`` for the mask).
    """
    chunks = tokenize_prompt(tokenizer, prompt, max_length=max_length, parse_weights=parse_weights)
    return encode_chunks(text_encoder, chunks, clip_skip=clip_skip)


def encode_prompt_pair(tokenizer: Any, text_encoder: Any, prompt: str, negative_prompt: str = "", *,
                       max_length: int | None = None, parse_weights: bool = True,
                       clip_skip: int | None = None) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Embeddings of a prompt and its negative prompt, of equal length so they batch for classifier-free guidance.

    The one with fewer chunks is padded with chunks of the empty prompt, as A1111 does (``pad_cond`` with
    the empty prompt's conditioning).
    """
    positive = tokenize_prompt(tokenizer, prompt, max_length=max_length, parse_weights=parse_weights)
    negative = tokenize_prompt(tokenizer, negative_prompt, max_length=max_length, parse_weights=parse_weights)
    count = max(len(positive), len(negative))
    if len(positive) != len(negative):
        empty = tokenize_prompt(tokenizer, "", max_length=max_length)
        positive, negative = positive.padded_to(count, empty), negative.padded_to(count, empty)
    return (encode_chunks(text_encoder, positive, clip_skip=clip_skip),
            encode_chunks(text_encoder, negative, clip_skip=clip_skip))
