"""Style presets: a name (ernie_vilg's 17 plus 水墨) -> prompt and negative-prompt fragments.

The table is data, ``assets/styles.json``; each style has Chinese fragments (for Chinese text encoders) and
English ones (for CLIP, which reads no Chinese). A style appends its fragment to the user's prompt, and its
negative fragment to the user's negative prompt.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources

LANGUAGES = ("zh", "en")
#: how a fragment joins the user's text, per language (Chinese full-width comma, English ", ")
SEPARATORS = {"zh": "，", "en": ", "}


class UnknownStyleError(ValueError):
    """A style name that is not in the table; the message lists the valid names."""


@dataclasses.dataclass(frozen=True)
class Fragments:
    prompt: str
    negative: str


@dataclasses.dataclass(frozen=True)
class Style:
    name: str
    fragments: dict[str, Fragments]

    def apply(self, prompt: str, negative: str, language: str) -> tuple[str, str]:
        """``prompt`` and ``negative`` with this style's fragments for ``language`` appended."""
        fragments, separator = self.fragments[language], SEPARATORS[language]
        return _join(prompt, fragments.prompt, separator), _join(negative, fragments.negative, separator)


def _join(text: str, fragment: str, separator: str) -> str:
    text = text.rstrip().rstrip(",，")
    return f"{text}{separator}{fragment}" if text else fragment


@functools.lru_cache(maxsize=1)
def style_table() -> dict[str, Style]:
    """All styles, in the table's order."""
    raw = json.loads(resources.files("stable_diffusion_chinese").joinpath("assets", "styles.json")
                     .read_text(encoding="utf-8"))
    return {name: Style(name, {lang: Fragments(**entry[lang]) for lang in LANGUAGES})
            for name, entry in raw["styles"].items()}


def style_names() -> list[str]:
    return list(style_table())


def get_style(name: str) -> Style:
    if not isinstance(name, str):
        raise TypeError(f"style must be a string (one of {', '.join(style_names())}), got {type(name).__name__}")
    table = style_table()
    if name not in table:
        raise UnknownStyleError(f"unknown style {name!r}; valid styles: {', '.join(table)}")
    return table[name]


def describe_styles(language: str = "zh") -> dict[str, dict[str, str]]:
    """``{name: {"prompt": fragment, "negative": fragment}}`` for listing (Python, CLI, serving)."""
    return {name: dataclasses.asdict(style.fragments[language]) for name, style in style_table().items()}
