"""Splitting a tree into partitions and merging them back (`combine`)."""

from __future__ import annotations

import reprlib
from typing import Any

import jax
import numpy as np

from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._tree_util import pretty_keystr, tree_flatten_exactly_one_level

KeyPath = tuple[Any, ...]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 6


@pytree_dataclass
class NotInThisPartition(Struct):
    """Marks a subtree that lives in another partition of the same tree.

    `Selection.partition` splits a tree into parts and puts this sentinel where
    a part lacks a subtree; `combine` puts the parts back together. It has no
    pytree children, so partitions pass through `jax.jit`, `jax.grad` and
    `jax.tree_util.tree_map` unchanged.

    Example:
      >>> from saikei import sk
      >>> selected, rest = sk.select({"w": 1.0, "n": 2}).at(lambda t: t["w"]).partition()
      >>> rest
      {'n': 2, 'w': NotInThisPartition()}
      >>> sk.combine(selected, rest)
      {'n': 2, 'w': 1.0}
    """


_NOT_HERE = NotInThisPartition()


def _is_not_here(x: Any) -> bool:
    return isinstance(x, NotInThisPartition)


class SelectedMark:
    """Wraps a selected subtree while `prune_to_selected` looks for it (internal)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def prune_to_selected(marked: Any) -> Any:
    """Keeps the `SelectedMark`-ed subtrees; the rest becomes `NotInThisPartition`.

    Every subtree that holds no mark is replaced by one `NotInThisPartition`
    at its highest point (as penzai's `partition()` does), so a branch with
    nothing selected is a single placeholder, not a copy of its structure.

    Example:
      >>> prune_to_selected({"a": [1, SelectedMark(2)], "b": (3, 4)})
      {'a': [NotInThisPartition(), 2], 'b': NotInThisPartition()}
    """
    value, _ = _prune(marked)
    return value


def _prune(node: Any) -> tuple[Any, bool]:
    if type(node) is SelectedMark:
        return node.value, True
    level = tree_flatten_exactly_one_level(node)
    if level is None or not level[0]:
        return _NOT_HERE, False
    children = []
    found = False
    for _, child in level[0]:
        value, has_mark = _prune(child)
        children.append(value)
        found = found or has_mark
    if not found:
        return _NOT_HERE, False
    return level[1].unflatten(children), True


def combine(*partitions: Any) -> Any:
    """Merges partitions of a tree back into one tree.

    The partitions must have the same structure, except that a
    `NotInThisPartition` may stand in for any whole subtree. Every leaf must be
    present in exactly one partition. Where every partition lacks a subtree,
    the result keeps `NotInThisPartition` (so combining some of the parts of a
    three-way split gives a valid two-way partition).

    Args:
      *partitions: The trees to merge, e.g. the pair returned by
        `Selection.partition`.

    Returns:
      The merged tree.

    Raises:
      ValueError: If two partitions both hold the leaf at some keypath, or
        their structures disagree somewhere (the message names the keypath).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> params, rest = sk.select([1.0, "relu", 2.0]).at_instances_of(float).partition()
      >>> params = jax.tree_util.tree_map(lambda x: x * 10, params)
      >>> sk.combine(params, rest)
      [10.0, 'relu', 20.0]
    """
    if not partitions:
        raise TypeError("combine() needs at least one partition.")
    if len(partitions) == 1:
        return partitions[0]
    flats = [jax.tree_util.tree_flatten(p, is_leaf=_is_not_here) for p in partitions]
    treedef = flats[0][1]
    if all(t == treedef for _, t in flats[1:]):
        merged = []
        for position, column in enumerate(zip(*(leaves for leaves, _ in flats))):
            merged.append(_merge_leaves(column, partitions, position))
        return treedef.unflatten(merged)
    return _combine_nodes(list(enumerate(partitions)), (), partitions)


def _merge_leaves(column: tuple[Any, ...], partitions: tuple[Any, ...], position: int) -> Any:
    value = _NOT_HERE
    owner = None
    for index, leaf in enumerate(column):
        if isinstance(leaf, NotInThisPartition):
            continue
        if owner is not None:
            path = jax.tree_util.tree_flatten_with_path(partitions[0], is_leaf=_is_not_here)[0][
                position
            ][0]
            raise _conflict(path, partitions, owner, index, value, leaf)
        owner, value = index, leaf
    return value


def _combine_nodes(nodes: list[tuple[int, Any]], path: KeyPath, partitions: tuple[Any, ...]) -> Any:
    present = [(i, n) for i, n in nodes if not isinstance(n, NotInThisPartition)]
    if not present:
        return _NOT_HERE
    if len(present) == 1:
        return present[0][1]
    levels = [(i, n, tree_flatten_exactly_one_level(n)) for i, n in present]
    first_index, first_node, first_level = levels[0]
    for index, node, level in levels[1:]:
        if first_level is None or level is None:
            raise _conflict(path, partitions, first_index, index, first_node, node)
        if level[1] != first_level[1]:
            raise ValueError(
                f"combine: the partitions disagree on the structure at"
                f" {_describe_path(path, partitions[first_index])}: partition"
                f" {first_index} has {_short(first_node)} and partition {index} has"
                f" {_short(node)}. Partitions must have the same structure apart from"
                " NotInThisPartition placeholders; pass the parts of one split."
            )
    children = []
    for j, (key, _) in enumerate(first_level[0]):
        column = [(i, level[0][j][1]) for i, _, level in levels]
        children.append(_combine_nodes(column, (*path, key), partitions))
    return first_level[1].unflatten(children)


def _conflict(
    path: KeyPath, partitions: tuple[Any, ...], first: int, second: int, a: Any, b: Any
) -> ValueError:
    return ValueError(
        f"combine: partitions {first} and {second} both hold a value at"
        f" {_describe_path(path, partitions[first])} ({_short(a)} and {_short(b)}). Each"
        " leaf must be present in exactly one partition, the others holding"
        " NotInThisPartition there. Did you pass the same partition twice?"
    )


def _describe_path(path: KeyPath, tree: Any) -> str:
    if not path:
        return "the root"
    try:
        return pretty_keystr(path, tree)
    except Exception:  # A plain keystr is good enough for the message.
        return jax.tree_util.keystr(path)


def _short(value: Any) -> str:
    if isinstance(value, jax.Array | np.ndarray):
        return f"{type(value).__name__}(shape={value.shape}, dtype={value.dtype})"
    return _REPR.repr(value)
