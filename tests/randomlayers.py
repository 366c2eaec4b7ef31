"""Random layer stacks over a few overlapping paths, every marker form included: for the
differential tests that hold an optimised algorithm to its plain definition. `random_forms`
draws them; `random_layers` gives them as `archive.Entry` lists (tests/unit/test_fsview.py,
test_divecompat.py) and test_squash_merge.py writes them as layer tars."""

from __future__ import annotations

import random
from typing import NamedTuple

from layerkit.image.archive import Entry

NAMES = ["a", "b", "a/x", "a/y", "a/x/f", "a/x/g", "b/z", "a/x/h/i", "c"]


class Form(NamedTuple):
    kind: str      # whiteout, opaque, dir, symlink or file
    path: str
    size: int = 0
    mode: int = 0o644
    link: str = ""
    fill: str = "a"  # file contents: `fill` repeated `size` times (same size, other contents)


def random_forms(rng: random.Random, min_layers: int = 1) -> list[list[Form]]:
    layers = []
    for _ in range(rng.randint(min_layers, 5)):
        forms = []
        for _ in range(rng.randint(0, 8)):
            path = rng.choice(NAMES)
            draw = rng.random()
            if draw < 0.2:  # a whiteout of the path
                forms.append(Form("whiteout", path))
            elif draw < 0.3:  # an opaque marker in it
                forms.append(Form("opaque", path))
            elif draw < 0.6:
                forms.append(Form("dir", path, mode=rng.choice([0o755, 0o700])))
            elif draw < 0.7:
                forms.append(Form("symlink", path, mode=0o777, link=rng.choice(NAMES)))
            else:
                forms.append(Form("file", path, rng.choice([0, 3, 5]),
                                  rng.choice([0o644, 0o600]), fill=rng.choice("ab")))
        layers.append(forms)
    return layers


def random_layers(rng: random.Random) -> list[list[Entry]]:
    return [[_entry(form) for form in forms] for forms in random_forms(rng)]


def _entry(form: Form) -> Entry:
    head, _, name = form.path.rpartition("/")
    if form.kind == "whiteout":
        return Entry(f"{head}/.wh.{name}".lstrip("/"), "file", 0, 0, 0, 0)
    if form.kind == "opaque":
        return Entry(f"{form.path}/.wh..wh..opq", "file", 0, 0, 0, 0)
    if form.kind == "dir":
        return Entry(form.path, "dir", 0, form.mode, 0, 0)
    if form.kind == "symlink":
        return Entry(form.path, "symlink", 0, form.mode, 0, 0, form.link)
    return Entry(form.path, "file", form.size, form.mode, 0, 0)
