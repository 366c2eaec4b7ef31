"""dive 0.13's efficiency figures, recomputed from layer entries, for users who know dive.

dive's model differs from overlayfs (and from `reclaimable_bytes`), and these figures keep its
quirks on purpose, so that they match dive on the same image:

- Only *leaves* of each layer's tree are scored (a directory listed with children is not).
- Sizes are tar header sizes: hardlinks count 0, so a copied-up hardlinked file counts once.
- A path seen in two or more layers is "inefficient" and its bytes in *every* layer count as
  wasted, the final version included (`wasted_bytes_dive` can exceed what a squash saves).
- A whiteout of a file scores 0 bytes, so the deleted file's bytes are wasted; a whiteout of a
  directory scores the size of the subtree it deletes, so deleting a directory costs nothing.
- Opaque directory markers (`.wh..wh..opq`) are ignored: what they hide is not waste to dive.
- A non-directory over a directory does not hide its subtree in dive's stacked tree.
- `efficiency` = sum over paths of the smallest version / sum over paths of all versions;
  `user_wasted_percent` = wasted bytes / bytes of all layers but the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layerkit.image.archive import Entry
from layerkit.image.fsview import WHITEOUT_PREFIX, is_opaque_marker, whiteout_target

__all__ = ["DiveFigures", "dive_figures"]


@dataclass(frozen=True)
class DiveFigures:
    efficiency: float
    wasted_bytes_dive: int
    user_wasted_percent: float
    size_bytes: int          # dive's image size: all layers' tar header sizes
    user_size_bytes: int     # the same without the first layer


# per path, over its versions: [count, total size, smallest size]
_Score = list[int]


class _Stack:
    """dive's stacked tree: path -> (is_dir, size), with children for subtree sums. The
    children index is built at the first whiteout that meets the stack, and kept from then on:
    most images delete little, and indexing every added path was a third of dive's figures."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[bool, int]] = {}
        self.children: dict[str, set[str]] | None = None

    def stack(self, tree: dict[str, tuple[bool, int, bool]]) -> None:
        """A layer's tree on top: its whiteouts remove, its other paths add or replace."""
        nodes = self.nodes
        for path, (is_dir, size, whiteout) in tree.items():
            if whiteout:
                self.remove(path)
            elif self.children is None:
                nodes[path] = (is_dir, size)
            else:
                self.add(path, is_dir, size)

    def add(self, path: str, is_dir: bool, size: int) -> None:
        children = self._children()
        if path not in self.nodes:
            parent = path.rpartition("/")[0]
            children.setdefault(parent, set()).add(path)
        self.nodes[path] = (is_dir, size)

    def remove(self, path: str) -> None:
        if path not in self.nodes:
            return
        children = self._children()
        for child in list(children.get(path, ())):
            self.remove(child)
        children.pop(path, None)
        del self.nodes[path]
        children[path.rpartition("/")[0]].discard(path)

    def subtree_size(self, path: str) -> int:
        children = self._children()
        total, todo = 0, [path]
        while todo:
            here = todo.pop()
            total += self.nodes.get(here, (False, 0))[1]
            todo.extend(children.get(here, ()))
        return total

    def _children(self) -> dict[str, set[str]]:
        if self.children is None:
            self.children = {}
            for path in self.nodes:
                self.children.setdefault(path.rpartition("/")[0], set()).add(path)
        return self.children


def _layer_tree(entries: Sequence[Entry]) -> tuple[dict[str, tuple[bool, int, bool]], set[str]]:
    """A layer as dive sees it: path -> (is_dir, size, whiteout), implicit parents included;
    and the paths that have children there (the others are its leaves)."""
    tree: dict[str, tuple[bool, int, bool]] = {}
    parents: set[str] = set()
    for entry in entries:
        path = entry.path
        whiteout = False
        if WHITEOUT_PREFIX in path:  # the rare case: a marker
            if is_opaque_marker(path):
                continue
            target = whiteout_target(path)
            if target is not None:
                path, whiteout = target, True
        parent = path.rpartition("/")[0]
        parents.add(parent)
        while parent and parent not in tree:  # dive adds missing parents with empty metadata
            tree[parent] = (False, 0, False)
            parent = parent.rpartition("/")[0]
            parents.add(parent)
        tree[path] = (entry.kind == "dir", entry.size, whiteout)
    return tree, parents


def dive_figures(layers: Sequence[Sequence[Entry]]) -> DiveFigures:
    scores: dict[str, _Score] = {}
    stack = _Stack()
    sizes = [sum(e.size for e in entries) for entries in layers]
    for index, entries in enumerate(layers):
        tree, parents = _layer_tree(entries)
        for path, (_, size, whiteout) in tree.items():
            if path in parents:
                continue  # not a leaf
            if whiteout:
                was_dir = stack.nodes.get(path, (False, 0))[0]
                size = stack.subtree_size(path) if was_dir else 0
            score = scores.get(path)
            if score is None:
                scores[path] = [1, size, size]
            else:
                score[0] += 1
                score[1] += size
                score[2] = min(score[2], size)
        if index == len(layers) - 1:
            break  # the stack is for later layers' whiteouts: there are none
        stack.stack(tree)
    return _figures(scores, sizes)


def _figures(scores: dict[str, _Score], sizes: list[int]) -> DiveFigures:
    smallest = sum(s[2] for s in scores.values())
    total = sum(s[1] for s in scores.values())
    wasted = sum(s[1] for s in scores.values() if s[0] > 1)
    user = sum(sizes[1:])
    return DiveFigures(efficiency=smallest / total if total else 1.0, wasted_bytes_dive=wasted,
                       user_wasted_percent=wasted / user if user else 0.0,
                       size_bytes=sum(sizes), user_size_bytes=user)
