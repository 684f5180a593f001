"""Reading the JSON files of a model folder with errors that name the file.

A hand-edited or truncated ``config.json`` / ``model_index.json`` otherwise surfaces as a bare
``JSONDecodeError: Expecting property name ...`` that does not say which of a dozen files is broken.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class InvalidJSONError(ValueError):
    """A file that should hold a JSON object does not."""


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path`` (Python's json also reads diffusers' ``-Infinity``)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InvalidJSONError(f"{path} is not valid JSON: {error.msg} (line {error.lineno}, "
                               f"column {error.colno})") from None
    except UnicodeDecodeError:
        raise InvalidJSONError(f"{path} is not valid JSON: it is not UTF-8 text") from None
    if not isinstance(values, dict):
        raise InvalidJSONError(f"{path} must hold a JSON object ({{...}}), found {type(values).__name__}")
    return values
