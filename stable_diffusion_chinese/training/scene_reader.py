"""A scene-reading objective for the embedded model's text encoder: it must encode *which* word goes with which.

Why: the diffusion loss alone left the text encoder reading captions as bags of words (docs/embedded_model.md,
``scripts/probe_text_binding.py``): the tokens of "左边是红色的圆形，右边是蓝色的三角形" encoded the same
whatever side each clause named, so the UNet could not tell which colour and shape go where, and two-object
scenes came out right in 13 %. Stable Diffusion gets binding from a text encoder pretrained on another task
(CLIP's contrastive loss); the analogue in the scene world is to read the caption back into the scene it
describes, which the caption generator knows.

``SceneReader`` is deliberately shaped like the UNet's cross-attention: nine learned cell queries and one
scene query, each a single attention over the encoder's token states (keys and values linear in them, no
attention mask, as the pipeline encodes prompts), then a small classifier. A query can only collect what the
tokens carry, so "what is in the left cell" is answerable only if the colour and shape tokens of that clause
encode that they belong to it: bag-of-words encodings cannot score above chance on a pair's cells.

Targets per scene (``scene_targets``; ``IGNORE`` where the caption does not say):
  cell k (single and pair scenes): shape (0 = empty, 1..4) and colour (0 = empty, 1..8);
  scene: background (0 = none, 1..8), style (index in world.STYLES), count - 1 (single and count scenes),
         the object's shape and colour (single and count scenes).
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..scenes.world import COLOURS, GRID, SHAPES, STYLES, Scene

IGNORE = -1
CELLS = GRID * GRID
#: (name, classes) of the per-cell and the per-scene fields, in logit order
CELL_FIELDS = (("shape", 1 + len(SHAPES)), ("colour", 1 + len(COLOURS)))
SCENE_FIELDS = (("background", 1 + len(COLOURS)), ("style", len(STYLES)), ("count", 3),
                ("object_shape", len(SHAPES)), ("object_colour", len(COLOURS)))


def scene_targets(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """int64 [CELLS, len(CELL_FIELDS)] and [len(SCENE_FIELDS)] class indices (IGNORE: not said)."""
    cells = np.full((CELLS, len(CELL_FIELDS)), IGNORE, dtype=np.int64)
    if scene.kind != "count":   # count captions do not say where the copies are
        cells[:] = 0
        for o in scene.objects:
            cells[o.cell] = (1 + SHAPES.index(o.shape), 1 + COLOURS.index(o.colour))
    first = scene.objects[0]
    one_kind = scene.kind != "pair"
    background = 0 if scene.background is None else 1 + COLOURS.index(scene.background)
    whole = (background, STYLES.index(scene.style), scene.count - 1 if one_kind else IGNORE,
             SHAPES.index(first.shape) if one_kind else IGNORE, COLOURS.index(first.colour) if one_kind else IGNORE)
    return cells, np.asarray(whole, dtype=np.int64)


def batch_targets(scenes: list[Scene]) -> tuple[np.ndarray, np.ndarray]:
    parts = [scene_targets(s) for s in scenes]
    return np.stack([c for c, _ in parts]), np.stack([w for _, w in parts])


class SceneReader(nn.Layer):
    """Cell and scene queries attending over token states -> logits of the fields above."""

    def __init__(self, hidden_size: int, num_heads: int = 4):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.queries = self.create_parameter([CELLS + 1, hidden_size],
                                             default_initializer=nn.initializer.Normal(std=0.02))
        self.to_k, self.to_v = nn.Linear(hidden_size, hidden_size), nn.Linear(hidden_size, hidden_size)
        self.to_out = nn.Linear(hidden_size, hidden_size)
        self.cell_head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                       nn.Linear(hidden_size, sum(n for _, n in CELL_FIELDS)))
        self.scene_head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                        nn.Linear(hidden_size, sum(n for _, n in SCENE_FIELDS)))

    def forward(self, tokens: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """tokens [B, L, D] -> cell logits [B, CELLS, sum cell classes], scene logits [B, sum scene classes]."""
        b, length, d = tokens.shape
        h = self.num_heads

        def split(x):   # [B, L, D] -> [B, heads, L, D / heads]
            return x.reshape([b, -1, h, d // h]).transpose([0, 2, 1, 3])
        q = self.queries.reshape([1, CELLS + 1, h, d // h]).transpose([0, 2, 1, 3])
        weights = F.softmax(paddle.matmul(q, split(self.to_k(tokens)), transpose_y=True) / (d // h) ** 0.5, axis=-1)
        read = paddle.matmul(weights, split(self.to_v(tokens))).transpose([0, 2, 1, 3]).reshape([b, CELLS + 1, d])
        read = self.to_out(read)
        return self.cell_head(read[:, :CELLS]), self.scene_head(read[:, CELLS])

    def loss(self, tokens: paddle.Tensor, scenes: list[Scene]) -> tuple[paddle.Tensor, dict[str, float]]:
        """Sum over fields of the mean cross-entropy of the stated targets; also each field's accuracy."""
        cell_logits, scene_logits = self(tokens)
        cell_targets, scene_targets_ = batch_targets(scenes)
        total, accuracy = paddle.zeros([]), {}
        for logits, targets, fields in ((cell_logits, cell_targets, CELL_FIELDS),
                                        (scene_logits, scene_targets_, SCENE_FIELDS)):
            start = 0
            for k, (name, classes) in enumerate(fields):
                part, target = logits[..., start:start + classes], targets[..., k]
                start += classes
                stated = target != IGNORE
                if not stated.any():
                    continue
                log_p = F.log_softmax(part.reshape([-1, classes]), axis=-1)
                flat = np.where(stated, target, 0).reshape(-1)
                picked = paddle.take_along_axis(log_p, paddle.to_tensor(flat).unsqueeze(-1), axis=-1).squeeze(-1)
                mask = paddle.to_tensor(stated.reshape(-1).astype(np.float32))
                total = total - (picked * mask).sum() / float(stated.sum())
                guess = log_p.argmax(axis=-1).numpy()
                accuracy[name] = float((guess == flat)[stated.reshape(-1)].mean())
        placed = [k for k, s in enumerate(scenes) if s.kind != "count"]
        if placed:   # every cell of the scene read right: what a two-object scene needs
            cells = read_scenes_from_logits(cell_logits, CELL_FIELDS)[placed]
            accuracy["scene_cells"] = float((cells == cell_targets[placed]).all(axis=(1, 2)).mean())
        return total, accuracy


def read_scenes_from_logits(logits: paddle.Tensor, fields) -> np.ndarray:
    """Class guesses per field, stacked on a last axis (the layout of ``batch_targets``' arrays)."""
    start, guesses = 0, []
    for _, classes in fields:
        guesses.append(logits[..., start:start + classes].argmax(axis=-1).numpy())
        start += classes
    return np.stack(guesses, axis=-1)
