"""The UNet's cross-attention maps, read by forward hooks, and a loss that binds words to their objects' cells.

Scenes know where each object is (its grid cells) and captions know which tokens name it
(``scenes.captions.object_mentions``), so the training loop can ask of every ``attn2`` map that each
object word's attention fall in its own object's cells. This is the token loss of TokenCompose
(Wang et al., CVPR 2024, eq. 3) with the renderer's cells as the masks:

    L = mean over object tokens k and layers of (1 - sum_{q in cells(k)} A[q, k] / sum_q A[q, k])^2

where A[q, k] is the head-averaged softmax attention of query position q to token k.
scripts/probe_cross_attention.py measures the same maps (own / (own + other) cell share).
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from ..models.attention_ops import split_heads
from ..scenes.captions import object_mentions
from ..scenes.world import GRID


def cell_mask(cell: int, side: int) -> np.ndarray:
    """[side * side] booleans: the map positions whose centres fall in ``cell`` of the 3x3 grid."""
    band = np.floor((np.arange(side) + 0.5) * GRID / side).astype(int)   # grid row (= column) of each map row
    return ((band[:, None] == cell // GRID) & (band[None, :] == cell % GRID)).reshape(-1)


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
    position lies in the cells of the object that token names."""

    def __init__(self, tokenizer, scenes, captions: list[str], length: int):
        self.selected = np.zeros((len(captions), length), np.float32)
        self._cells: list[tuple[int, int, tuple[int, ...]]] = []   # (row, token, cells)
        for row, (scene, text) in enumerate(zip(scenes, captions)):
            mentions = object_mentions(scene, text) if text else None
            positions = caption_token_positions(tokenizer, text) if mentions else None
            if positions is None:
                continue
            for chars, cells in mentions:
                for char in chars:
                    token = positions[char]
                    if 0 <= token < length - len(tokenizer.suffix_ids):   # not cut off by truncation
                        self.selected[row, token] = 1.0
                        self._cells.append((row, token, cells))
        self._regions: dict[int, np.ndarray] = {}

    @property
    def empty(self) -> bool:
        return not self._cells

    def region(self, side: int) -> np.ndarray:
        if side not in self._regions:
            region = np.zeros((self.selected.shape[0], side * side, self.selected.shape[1]), np.float32)
            for row, token, cells in self._cells:
                region[row, :, token] = np.any([cell_mask(c, side) for c in cells], axis=0)
            self._regions[side] = region
        return self._regions[side]


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
