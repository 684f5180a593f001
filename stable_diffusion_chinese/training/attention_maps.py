"""The UNet's cross-attention maps, read by forward hooks, and a loss that binds words to their objects' cells.

Scenes know where each object is (its grid cells) and captions know which tokens name it
(``scenes.captions.object_mentions``), so the training loop can ask of every ``attn2`` map that each
object word's attention fall in its own object's cells. This is the token loss of TokenCompose
(Wang et al., CVPR 2024, eq. 3) with the renderer's cells as the masks:

    L = mean over object tokens k and layers of (1 - sum_{q in cells(k)} A[q, k] / sum_q A[q, k])^2

where A[q, k] is the head-averaged softmax attention of query position q to token k.
scripts/probe_cross_attention.py measures the same maps (own / (own + other) cell share).

That loss looks down a token's column; ``leak_loss`` looks along a position's row. In a two-object scene the
cells of one object still give the other object's words a few per cent of their attention (about 0.03 against
0.34 for their own words; docs/embedded_model.md, "Where pairs fail"), and blocking exactly that at sampling
time took pairs' colour from 73 to 88 %. So, for the positions q in the cells of object j and the words W_j
of each object:

    L_leak = mean over such q and layers of  sum_{k in W_i, i != j} A[q, k] / sum_{k in W_1 ∪ W_2} A[q, k]

linear in the share, so a leak of a few per cent still has the full gradient (a square would fade near 0).

With ``background=True`` the same share is taken the other way round in the cells no object holds, when the
caption names the background's colour (B, its colour word): there the object words have no business at all,
and a share of them is how an extra object of the background's colour gets drawn (the named-background
failures in docs/embedded_model.md):

    L_bg = mean over positions q in empty cells and layers of  sum_{k in W} A[q, k] / sum_{k in W ∪ B} A[q, k]

(not at the objects' cells: part of a cell is background, so the colour word belongs there too).
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from ..models.attention_ops import split_heads
from ..scenes.captions import background_mention, object_mentions, position_mentions
from ..scenes.world import GRID


def cell_mask(cell: int, side: int) -> np.ndarray:
    """[side * side] booleans: the map positions whose centres fall in ``cell`` of the 3x3 grid."""
    band = np.floor((np.arange(side) + 0.5) * GRID / side).astype(int)   # grid row (= column) of each map row
    return ((band[:, None] == cell // GRID) & (band[None, :] == cell % GRID)).reshape(-1)


def cells_mask(cells, side: int) -> np.ndarray:
    """[side * side] booleans: the map positions in any of ``cells``."""
    return np.any([cell_mask(c, side) for c in cells], axis=0)


class CrossAttentionRecorder:
    """Collects, per named ``attn2`` layer, the head-averaged maps [rows, queries, keys] of the last ``rows``
    batch rows (all rows: ``rows=None``). The maps are recomputed from the layer's own ``to_q`` / ``to_k`` in
    the hook, exactly as ``attention_ops.attention`` computes them, and keep their gradient unless
    ``detach``; the UNet itself is not changed. Use as a context manager, or call ``close``."""

    def __init__(self, unet: paddle.nn.Layer, rows: int | None = None, detach: bool = True):
        self.rows, self.detach, self.maps, self._handles = rows, detach, {}, []
        for name, layer in unet.named_sublayers():
            if name.endswith("attn2"):
                self._handles.append(layer.register_forward_post_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(layer, inputs, output):
            x, context = inputs[0], inputs[1]
            if self.rows is not None:
                x, context = x[-self.rows:], context[-self.rows:]
            q, k = (split_heads(t, layer.heads) for t in (layer.to_q(x), layer.to_k(context)))
            scores = paddle.matmul(q, k, transpose_y=True) * q.shape[-1] ** -0.5
            maps = F.softmax(scores, axis=-1).mean(axis=1)
            self.maps.setdefault(name, []).append(maps.detach() if self.detach else maps)
        return record

    def clear(self) -> None:
        self.maps = {}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "CrossAttentionRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def caption_token_positions(tokenizer, text: str) -> list[int] | None:
    """Token index of each character of ``text`` (-1 for whitespace, which BERT drops), or None when the
    tokenizer does not give one token per character (then words cannot be located by characters)."""
    positions, ids, index = [], [], len(tokenizer.prefix_ids)
    for char in text:
        if char.isspace():
            positions.append(-1)
            continue
        piece = tokenizer.encode(char, add_special_tokens=False)
        if len(piece) != 1:
            return None
        positions.append(index)
        ids.append(piece[0])
        index += 1
    return positions if tokenizer.encode(text, add_special_tokens=False) == ids else None


class BindingTargets:
    """For a batch of captions: which tokens name an object, and for each map side the cells they should be seen in.

    ``selected`` [B, L]: 1 at the tokens of object words; ``region(side)`` [B, side*side, L]: 1 where a query
    position lies in the cells of the object that token names. With ``position_words`` the words naming an
    object's cell (左边, ...) count as that object's in ``rivals`` (not in ``selected``): the text encoder mixes
    the second object's colour into its position words (docs/embedded_model.md, "Where pairs fail")."""

    def __init__(self, tokenizer, scenes, captions: list[str], length: int, position_words: bool = False):
        self.selected = np.zeros((len(captions), length), np.float32)
        # per object: (row, its colour and shape tokens, its cells, its position words' tokens)
        self._objects: list[tuple[int, list[int], tuple[int, ...], list[int]]] = []
        self._background: dict[int, list[int]] = {}                       # row -> tokens naming its background
        last = length - len(tokenizer.suffix_ids)
        for row, (scene, text) in enumerate(zip(scenes, captions)):
            mentions = object_mentions(scene, text) if text else None
            positions = caption_token_positions(tokenizer, text) if mentions else None
            if positions is None:
                continue

            def kept(chars):   # the tokens of these characters not cut off by truncation
                return [positions[c] for c in chars if 0 <= positions[c] < last]
            places = position_mentions(text) if position_words else []
            for chars, cells in mentions:
                tokens = kept(chars)
                self.selected[row, tokens] = 1.0
                if tokens:
                    self._objects.append((row, tokens, cells,
                                          kept([c for span, cell in places if cell in cells for c in span])))
            if self._objects and self._objects[-1][0] == row:
                self._background[row] = kept(background_mention(scene, text))
        self._regions: dict[int, np.ndarray] = {}
        self._rivals: dict[tuple[str, int], tuple[np.ndarray, ...]] = {}

    @property
    def empty(self) -> bool:
        return not self._objects

    def region(self, side: int) -> np.ndarray:
        if side not in self._regions:
            region = np.zeros((self.selected.shape[0], side * side, self.selected.shape[1]), np.float32)
            for row, tokens, cells, _ in self._objects:
                region[row][:, tokens] = cells_mask(cells, side)[:, None]
            self._regions[side] = region
        return self._regions[side]

    def rivals(self, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For rows naming two or more objects: ``own`` / ``other`` [B, side*side, L], 1 where a position in an
        object's cells meets that object's tokens / another object's tokens (with ``position_words``, each
        counting its position words); ``at`` [B, side*side], 1 at those positions. All zero for other rows."""
        if ("objects", side) not in self._rivals:
            everyone: dict[int, list[int]] = {}
            for row, tokens, _, places in self._objects:
                everyone.setdefault(row, []).extend(tokens + places)
            entries = []
            for row, tokens, cells, places in self._objects:
                others = np.setdiff1d(everyone[row], tokens + places)   # the other objects' words
                if others.size:   # else the only object its caption names: nothing to leak to
                    entries.append((row, cells_mask(cells, side), tokens + places,
                                    others))
            self._rivals["objects", side] = self._mask_entries(side, entries)
        return self._rivals["objects", side]

    @property
    def has_rivals(self) -> bool:
        return len({row for row, *_ in self._objects}) < len(self._objects)

    def background_rivals(self, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rivals`` for the background: for rows whose caption names the background's colour, ``own`` /
        ``other`` 1 where a position in a cell no object holds meets the background's colour word / any
        object word, ``at`` 1 at those positions. All zero for other rows."""
        if ("background", side) not in self._rivals:
            entries = []
            for row, tokens in self._background.items():
                if tokens:
                    held = [c for r, _, cells, _ in self._objects if r == row for c in cells]
                    entries.append((row, ~cells_mask(held, side), tokens,
                                    np.nonzero(self.selected[row])[0]))
            self._rivals["background", side] = self._mask_entries(side, entries)
        return self._rivals["background", side]

    def _mask_entries(self, side: int, entries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``own`` / ``other`` [B, side*side, L] and ``at`` [B, side*side] from (row, positions, own tokens,
        other tokens) entries: 1 where those positions meet those tokens / at those positions, 0 elsewhere."""
        batch, length = self.selected.shape
        own, other = (np.zeros((batch, side * side, length), np.float32) for _ in range(2))
        at = np.zeros((batch, side * side), np.float32)
        for row, where, mine, theirs in entries:
            own[row][np.ix_(where, mine)] = 1.0
            other[row][np.ix_(where, theirs)] = 1.0
            at[row, where] = 1.0
        return own, other, at

    @property
    def has_background(self) -> bool:
        return any(self._background.values())


def binding_loss(maps: dict[str, list[paddle.Tensor]], targets: BindingTargets) -> paddle.Tensor:
    """TokenCompose's token loss (module docstring) over every recorded map, averaged over layers and tokens."""
    selected = paddle.to_tensor(targets.selected)
    terms = []
    for calls in maps.values():
        for attention in calls:   # [B, side*side, L]
            side = int(round(attention.shape[1] ** 0.5))
            inside = (attention * paddle.to_tensor(targets.region(side))).sum(axis=1)
            share = inside / (attention.sum(axis=1) + 1e-8)
            terms.append(((1.0 - share) ** 2 * selected).sum() / selected.sum())
    return paddle.add_n(terms) / len(terms)


def leak_loss(maps: dict[str, list[paddle.Tensor]], targets: BindingTargets,
              background: bool = False) -> paddle.Tensor:
    """The other object's share of the object words' attention at an object's cells (module docstring), or
    with ``background`` the object words' share against the background's colour word in the empty cells;
    averaged over those positions and every recorded map."""
    rivals = targets.background_rivals if background else targets.rivals
    terms = []
    for calls in maps.values():
        for attention in calls:   # [B, side*side, L]
            own, other, at = (paddle.to_tensor(a) for a in rivals(int(round(attention.shape[1] ** 0.5))))
            leaked = (attention * other).sum(axis=-1)
            share = leaked / (leaked + (attention * own).sum(axis=-1) + 1e-8)
            terms.append((share * at).sum() / paddle.clip(at.sum(), min=1.0))   # 0, not NaN, if too coarse
    return paddle.add_n(terms) / len(terms)
