"""How two-object scenes go wrong: reads the per-prompt JSON of ``evaluate_embedded.py --json`` and sorts
each pair prompt's objects (by the judge's detections in the wanted cells) into failure modes.

  python scripts/evaluate_embedded.py --kind pair --json /tmp/pairs.json
  python scripts/pair_failure_modes.py /tmp/pairs.json

Per object (the detection in its cell): colour right / the other object's colour / another colour / nothing
there; shape right / the other object's shape / another shape. Per prompt, by colours: both right, swapped
(each drew the other's colour), one colour on both, an object missing, other. "Swapped" and "one colour on
both" are binding failures: the words were read, but went to the wrong object. Ink scenes have no colours
and are left out of the colour modes.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

OBJECT_MODES = ("right", "other's", "another", "missing")
PROMPT_MODES = ("both right", "swapped", "one colour on both", "missing", "other")


def _found_in_cells(row: dict) -> list[dict | None]:
    """The detected object in each wanted cell: the largest there, as the judge takes it (scenes/judge.py _pair)."""
    by_cell = {}
    for found in row["objects"]:
        if found["cell"] not in by_cell or found["area"] > by_cell[found["cell"]]["area"]:
            by_cell[found["cell"]] = found
    return [by_cell.get(want["cell"]) for want in row["scene"]["objects"]]


def _object_mode(found: dict | None, key: str, want: dict, other: dict) -> str:
    if found is None:
        return "missing"
    if found[key] == want[key]:
        return "right"
    return "other's" if found[key] == other[key] else "another"


def _prompt_mode(found: list[dict | None], wants: list[dict]) -> str:
    if any(f is None for f in found):
        return "missing"
    got = [f["colour"] for f in found]
    wanted = [w["colour"] for w in wants]
    if got == wanted:
        return "both right"
    if got == wanted[::-1]:
        return "swapped"
    if got[0] == got[1] and got[0] in wanted:
        return "one colour on both"
    return "other"


def failure_modes(rows: list[dict]) -> dict[str, Counter]:
    """Counters ``colour`` and ``shape`` (per object) and ``prompt`` (per prompt, by colours)."""
    counts = {"colour": Counter(), "shape": Counter(), "prompt": Counter()}
    for row in rows:
        scene = row["scene"]
        if scene["kind"] != "pair":
            continue
        wants = scene["objects"]
        found = _found_in_cells(row)
        coloured = scene.get("style") != "ink"
        for f, want, other in zip(found, wants, wants[::-1]):
            counts["shape"][_object_mode(f, "shape", want, other)] += 1
            if coloured:
                counts["colour"][_object_mode(f, "colour", want, other)] += 1
        if coloured:
            counts["prompt"][_prompt_mode(found, wants)] += 1
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verdicts", type=Path, help="the --json file of scripts/evaluate_embedded.py")
    args = parser.parse_args(argv)
    rows = json.loads(args.verdicts.read_text(encoding="utf-8"))
    if rows and "scene" not in rows[0]:
        parser.exit(1, f"{args.verdicts}: no scenes in it; write it again with this version of evaluate_embedded.py\n")
    counts = failure_modes(rows)
    for name, modes in (("colour", OBJECT_MODES), ("shape", OBJECT_MODES), ("prompt", PROMPT_MODES)):
        total = sum(counts[name].values())
        unit = "prompts" if name == "prompt" else "objects"
        cells = ", ".join(f"{mode} {counts[name][mode]}" for mode in modes)
        print(f"{name:<7} ({total} {unit}): {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
