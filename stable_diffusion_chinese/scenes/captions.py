"""Chinese captions for scenes: synonyms, word order, optional 的/一个/有, punctuation, traditional characters.

A caption is a *frame* (word order) filled with randomly chosen synonyms. Frames come in two sets:
``TRAIN_FRAMES`` (all the training data ever says) and ``EVAL_FRAMES`` (orders training never
produces, used only by the evaluation prompt set). Pair captions in evaluation mix two different
halves (e.g. "{O1}在{P1}，{P2}是{O2}"), which no training frame does. Every word of the evaluation
frames also occurs in training captions, so what is held out is the phrasing, not the vocabulary.
"""
from __future__ import annotations

import re

import numpy as np

from .world import Scene, SceneObject

#: colour -> forms ending in 色 (usable before 的), and the bare one-character form (only right before a shape)
COLOUR_WORDS = {
    "red": (["红色"], "红"), "orange": (["橙色", "橘色"], "橙"), "yellow": (["黄色"], "黄"),
    "green": (["绿色"], "绿"), "blue": (["蓝色"], "蓝"), "purple": (["紫色"], "紫"),
    "pink": (["粉色", "粉红色"], "粉"), "black": (["黑色"], "黑"),
}
SHAPE_WORDS = {"circle": ["圆形", "圆", "圆圈"], "square": ["正方形", "方块", "方形"],
               "triangle": ["三角形", "三角"], "star": ["五角星", "星星", "星形"]}
#: cells 0..8 row-major
POSITION_WORDS = [["左上角", "左上方", "左上"], ["正上方", "上方", "上面", "顶部"], ["右上角", "右上方", "右上"],
                  ["左边", "左侧", "左面"], ["中间", "中央", "正中间", "中心"], ["右边", "右侧", "右面"],
                  ["左下角", "左下方", "左下"], ["正下方", "下方", "下面", "底部"], ["右下角", "右下方", "右下"]]
COUNT_WORDS = {1: ["一", "1"], 2: ["两", "2"], 3: ["三", "3"]}
#: style -> (stem used as "{stem}风格", nouns for "一幅{noun}")
STYLE_WORDS = {"ink": ("水墨", ["水墨画", "国画"]), "cartoon": ("卡通", ["卡通画"]), "pixel": ("像素", ["像素画", "像素风"]),
               "oil": ("油画", ["油画"]), "watercolor": ("水彩", ["水彩画"])}

TRAIN_FRAMES = {
    "single": ["{P}有{O}", "{P}{O}", "{O}在{P}", "在{P}有{O}", "画面{P}有{O}", "图片{P}有{O}", "{O}，{P}",
               "{O}位于{P}", "{P}画着{O}"],
    "count": ["{N}{M}", "有{N}{M}", "画面中有{N}{M}", "图片里有{N}{M}", "{M}，{N}", "{N}{S}，{C}的"],
    "pair": ["{P1}是{O1}{sep}{P2}是{O2}", "{P1}有{O1}{sep}{P2}有{O2}", "{O1}在{P1}{sep}{O2}在{P2}",
             "{P1}{O1}{sep}{P2}{O2}"],
}
EVAL_FRAMES = {
    "single": ["{P}是{O}", "在画面的{P}有{O}", "{O}画在{P}"],
    "count": ["图中画着{N}{M}", "{N}{S}，都是{C}"],
    "pair": ["{O1}在{P1}{sep}{P2}是{O2}", "{P1}有{O1}{sep}{O2}在{P2}"],
}
STYLE_PREFIXES = ["{stem}风格，", "{noun}：", "一幅{noun}，"]
STYLE_SUFFIXES = ["，{stem}风格", "，{noun}", " {stem}风格", "，{stem}风格的画"]
BACKGROUND_PREFIXES = ["{C}背景，", "{C}的背景上，", "背景是{C}，"]
BACKGROUND_SUFFIXES = ["，{C}背景", "，背景是{C}", "，背景为{C}"]
SEPARATORS = ["，", ",", "；", " ", "、"]
ENDINGS = ["", "", "。", ".", "！"]
TRADITIONAL_PROBABILITY = 0.15
#: simplified -> traditional for every character our captions use that has a traditional form
TRADITIONAL = str.maketrans({
    "红": "紅", "绿": "綠", "蓝": "藍", "黄": "黃", "圆": "圓", "边": "邊", "个": "個", "两": "兩", "块": "塊",
    "颗": "顆", "画": "畫", "风": "風", "间": "間", "侧": "側", "图": "圖", "里": "裡", "于": "於", "为": "為",
    "这": "這", "层": "層", "们": "們", "着": "著",
})


def caption(scene: Scene, rng: np.random.Generator, split: str = "train") -> str:
    """One random caption of ``scene``; ``split="eval"`` uses the held-out frames."""
    frames = {"train": TRAIN_FRAMES, "eval": EVAL_FRAMES}.get(split)
    if frames is None:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    text = _body(scene, _pick(rng, frames[scene.kind]), rng)
    if scene.background is not None:
        text = _decorate(text, _colour(scene.background, rng), BACKGROUND_PREFIXES, BACKGROUND_SUFFIXES, rng,
                         key="C")
    if scene.style is not None:
        text = _style(text, scene.style, rng)
    text += _pick(rng, ENDINGS)
    if rng.random() < TRADITIONAL_PROBABILITY:
        text = text.translate(TRADITIONAL)
    return text


def _body(scene: Scene, frame: str, rng: np.random.Generator) -> str:
    if scene.kind == "single":
        o = scene.objects[0]
        return frame.format(P=_position(o.cell, rng), O=_object(o, rng, optional_one=True))
    if scene.kind == "count":
        o = scene.objects[0]
        return frame.format(N=_count(scene.count, o.shape, rng), M=_modified(o, rng), S=_pick(rng, SHAPE_WORDS[o.shape]),
                            C=_colour(o.colour, rng))
    a, b = scene.objects
    return frame.format(P1=_position(a.cell, rng), O1=_object(a, rng, optional_one=True), sep=_pick(rng, SEPARATORS),
                        P2=_position(b.cell, rng), O2=_object(b, rng, optional_one=True))


def _object(o: SceneObject, rng: np.random.Generator, optional_one: bool) -> str:
    one = _count(1, o.shape, rng) if not optional_one or rng.random() < 0.5 else ""
    return one + _modified(o, rng)


def _modified(o: SceneObject, rng: np.random.Generator) -> str:
    """colour + shape: 红色的圆形 / 红色圆形 / 红圆形."""
    shape = _pick(rng, SHAPE_WORDS[o.shape])
    forms, bare = COLOUR_WORDS[o.colour]
    choice = rng.integers(3)
    if choice == 0:
        return _pick(rng, forms) + "的" + shape
    if choice == 1:
        return _pick(rng, forms) + shape
    return bare + shape


def _count(n: int, shape: str, rng: np.random.Generator) -> str:
    measure = "颗" if shape == "star" and rng.random() < 0.3 else "个"
    return _pick(rng, COUNT_WORDS[n]) + measure


def _colour(name: str, rng: np.random.Generator) -> str:
    return _pick(rng, COLOUR_WORDS[name][0])


def _position(cell: int, rng: np.random.Generator) -> str:
    return _pick(rng, POSITION_WORDS[cell])


def _style(text: str, style: str, rng: np.random.Generator) -> str:
    stem, nouns = STYLE_WORDS[style]
    noun = _pick(rng, nouns)
    if rng.random() < 0.5:
        return _pick(rng, STYLE_PREFIXES).format(stem=stem, noun=noun) + text
    return text + _pick(rng, STYLE_SUFFIXES).format(stem=stem, noun=noun)


def _decorate(text: str, value: str, prefixes, suffixes, rng: np.random.Generator, key: str) -> str:
    if rng.random() < 0.5:
        return _pick(rng, prefixes).format(**{key: value}) + text
    return text + _pick(rng, suffixes).format(**{key: value})


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


_SIMPLIFIED = {ord(t): chr(s) for s, t in TRADITIONAL.items()}
_COLOUR_OF = {form: name for name, (forms, bare) in COLOUR_WORDS.items() for form in (*forms, bare)}
_SHAPE_OF = {word: name for name, words in SHAPE_WORDS.items() for word in words}
# longest first, so 粉红色 is pink (not 红色 after 粉) and 三角形 is one shape word
_POSITION_OF = {word: cell for cell, words in enumerate(POSITION_WORDS) for word in words}
_POSITION = re.compile("|".join(sorted(map(re.escape, _POSITION_OF), key=len, reverse=True)))
_MENTION = re.compile("|".join(sorted(map(re.escape, {**_COLOUR_OF, **_SHAPE_OF}), key=len, reverse=True)))


def _words(text: str):
    """(colour or shape word, simplified, and its character positions) for each such word of ``text``."""
    for match in _MENTION.finditer(text.translate(_SIMPLIFIED)):
        yield match.group(), list(range(match.start(), match.end()))


def background_mention(scene: Scene, text: str) -> list[int]:
    """Character positions of the colour word(s) of ``text`` that name ``scene``'s background (none if the
    background is not named)."""
    return [c for word, span in _words(text) if _COLOUR_OF.get(word, "") == scene.background for c in span]


def position_mentions(text: str) -> list[tuple[list[int], int]]:
    """(character positions, cell) of each position word of ``text`` (左上角 -> cell 0, ...)."""
    return [(list(range(m.start(), m.end())), _POSITION_OF[m.group()])
            for m in _POSITION.finditer(text.translate(_SIMPLIFIED))]


def object_mentions(scene: Scene, text: str) -> list[tuple[list[int], tuple[int, ...]]] | None:
    """Where ``text`` (a caption of ``scene``) names each object: per object — all copies of a count
    scene's object together — the character positions of its colour and shape words, and its cells.

    None when the words do not line up with the scene (e.g. a hand-written caption). Pair captions
    always name ``objects[0]`` first; a colour word of the background's colour names the background
    (no object has it: world.MIN_BACKGROUND_CONTRAST)."""
    groups = [scene.objects] if scene.kind == "count" else [(o,) for o in scene.objects]
    colours, shapes = [], []
    for word, span in _words(text):
        if word in _SHAPE_OF:
            shapes.append((_SHAPE_OF[word], span))
        elif _COLOUR_OF[word] != scene.background:
            colours.append((_COLOUR_OF[word], span))
    if len(colours) != len(groups) or len(shapes) != len(groups):
        return None
    mentions = []
    for group, (colour, colour_span), (shape, shape_span) in zip(groups, colours, shapes):
        if (colour, shape) != (group[0].colour, group[0].shape):
            return None
        mentions.append((colour_span + shape_span, tuple(o.cell for o in group)))
    return mentions
