"""Random layer stacks over a few overlapping paths, every marker form included: for the
differential tests that hold an optimised algorithm to its plain definition."""

from __future__ import annotations

import random

from layerkit.archive import Entry


def random_layers(rng: random.Random) -> list[list[Entry]]:
    names = ["a", "b", "a/x", "a/y", "a/x/f", "a/x/g", "b/z", "a/x/h/i", "c"]
    layers = []
    for _ in range(rng.randint(1, 5)):
        entries = []
        for _ in range(rng.randint(0, 8)):
            path = rng.choice(names)
            head, _, name = path.rpartition("/")
            form = rng.random()
            if form < 0.2:  # a whiteout of the path
                entries.append(Entry(f"{head}/.wh.{name}".lstrip("/"), "file", 0, 0, 0, 0))
            elif form < 0.3:  # an opaque marker in it
                entries.append(Entry(f"{path}/.wh..wh..opq", "file", 0, 0, 0, 0))
            elif form < 0.6:
                entries.append(Entry(path, "dir", 0, 0o755, 0, 0))
            else:
                kind = rng.choice(["file", "file", "symlink"])
                entries.append(Entry(path, kind, rng.choice([0, 3, 5]) if kind == "file" else 0,
                                     rng.choice([0o644, 0o600]), 0, 0))
        layers.append(entries)
    return layers
