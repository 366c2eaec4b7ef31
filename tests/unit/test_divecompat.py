"""dive's figures against their plain definition on random layer stacks: the children index
built only when a whiteout meets the stack, and the leaf sets made in the same pass as a
layer's tree, must not change a figure. (tests/unit/test_analyze.py holds them to dive itself.)"""

from __future__ import annotations

import random
from collections.abc import Sequence

from layerkit.analyze.dive import DiveFigures, _figures, dive_figures
from layerkit.image.archive import Entry
from layerkit.image.fsview import is_opaque_marker, whiteout_target
from tests.randomlayers import random_layers


def _plain_tree(entries: Sequence[Entry]) -> dict[str, tuple[bool, int, bool]]:
    tree: dict[str, tuple[bool, int, bool]] = {}
    for entry in entries:
        if is_opaque_marker(entry.path):
            continue
        target = whiteout_target(entry.path)
        path = target or entry.path
        parent = path.rpartition("/")[0]
        while parent and parent not in tree:
            tree[parent] = (False, 0, False)
            parent = parent.rpartition("/")[0]
        tree[path] = (entry.kind == "dir", entry.size, target is not None)
    return tree


def _plain_figures(layers: Sequence[Sequence[Entry]]) -> DiveFigures:
    """Every layer stacked, every path indexed under its parent as it is added."""
    nodes: dict[str, tuple[bool, int]] = {}
    children: dict[str, set[str]] = {}

    def remove(path: str) -> None:
        if path in nodes:
            for child in list(children.get(path, ())):
                remove(child)
            children.pop(path, None)
            del nodes[path]
            children[path.rpartition("/")[0]].discard(path)

    def subtree(path: str) -> int:
        return nodes.get(path, (False, 0))[1] + sum(subtree(c) for c in children.get(path, ()))

    scores: dict[str, list[int]] = {}
    for entries in layers:
        tree = _plain_tree(entries)
        parents = {path.rpartition("/")[0] for path in tree}
        for path, (_, size, whiteout) in tree.items():
            if path in parents:
                continue
            if whiteout:
                size = subtree(path) if nodes.get(path, (False, 0))[0] else 0
            score = scores.setdefault(path, [0, 0, size])
            score[0] += 1
            score[1] += size
            score[2] = min(score[2], size)
        for path, (is_dir, size, whiteout) in tree.items():
            if whiteout:
                remove(path)
            else:
                if path not in nodes:
                    children.setdefault(path.rpartition("/")[0], set()).add(path)
                nodes[path] = (is_dir, size)
    return _figures(scores, [sum(e.size for e in entries) for entries in layers])


def test_dive_figures_agree_with_their_plain_definition() -> None:
    rng = random.Random(20261202)
    deleting = 0
    for _ in range(4000):
        layers = random_layers(rng)
        deleting += _deletes_a_stacked_path(layers)
        assert dive_figures(layers) == _plain_figures(layers), layers
    assert deleting > 500  # the lazy index was built, and used, many times


def _deletes_a_stacked_path(layers: Sequence[Sequence[Entry]]) -> bool:
    """Does a whiteout (not the last layer's: that one is never stacked) delete a path an
    older layer has? Only such a whiteout builds the children index."""
    seen: set[str] = set()
    for entries in layers[:-1]:
        for entry in entries:
            target = whiteout_target(entry.path)
            if target is not None and target in seen:
                return True
        seen.update(e.path for e in entries)
    return False


def test_a_deleted_file_that_had_replaced_a_directory_takes_the_subtree_with_it() -> None:
    """dive keeps a directory's subtree under a file that replaced it; a whiteout of that
    path, the first deletion the stack meets (its index is built then), removes it all, so
    the directory made again later holds only what it is given then."""
    subtree = [Entry("d", "dir", 0, 0o755, 0, 0), Entry("d/f", "file", 7, 0o644, 0, 0)]
    delete = [Entry(".wh.d", "file", 0, 0, 0, 0)]
    layers = [subtree, [Entry("d", "file", 1, 0o644, 0, 0)], delete, subtree, delete]
    figures = dive_figures(layers)
    assert figures == _plain_figures(layers)
    # d/f twice (7 + 7); d as a file (1), deleted as a file (0), deleted as a directory,
    # scored as its subtree (7: the d/f made again, which the index must know of)
    assert figures.wasted_bytes_dive == 7 + 7 + 1 + 0 + 7
