"""Finding the subtrees to select inside one selected value.

Every `Selection.at_*` method runs a search over each currently selected
subtree and replaces the matches with `SelectionHole`s. The search is one pass
of JAX's C++ flattener with an `is_leaf` callback that stops at matches (and at
pre-existing holes and quotes, which must be escaped), so it costs O(tree size)
with a single Python call per node.
"""

from __future__ import annotations

import abc
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from saikei.core._selection_holes import (
    QUOTABLE,
    KeyPath,
    SelectionHole,
    is_empty_node,
    make_quote,
    one_level,
    short_repr,
    unflatten_checked,
)

Found = list[tuple[KeyPath, Any]]

_new = object.__new__
_set = object.__setattr__


class Finder:
    """What to select during a search.

    Attributes:
      match: The predicate, called as `match(x)` or, if `takes_path`, as
        `match(relative_keypath, x)`, where the keypath is relative to the
        currently selected node the search started from.
      takes_path: Whether `match` takes a keypath.
      pure: The predicate is cheap and depends only on `x`, so it may be called
        again on the nodes it matched instead of recording them.
      leaves_too: Also select every pytree leaf the predicate did not stop at.
      innermost: Select the deepest matches instead of the outermost.
      prune: For path-taking predicates, `prune(relative_keypath)` may say that
        nothing below that keypath can match *and* that the subtree holds no
        `SelectionHole` or `SelectionQuote`, so the search need not enter it.
    """

    __slots__ = ("innermost", "leaves_too", "match", "prune", "pure", "takes_path")

    def __init__(
        self,
        match: Callable[..., bool] | None,
        *,
        takes_path: bool = False,
        pure: bool = False,
        leaves_too: bool = False,
        innermost: bool = False,
        prune: Callable[[KeyPath], bool] | None = None,
    ) -> None:
        self.match = match
        self.takes_path = takes_path
        self.pure = pure and not takes_path
        self.leaves_too = leaves_too
        self.innermost = innermost
        self.prune = prune if takes_path else None


NOTHING = Finder(None)


def search(
    value: Any, path: KeyPath, finder: Finder, rel_start: int | None = None
) -> tuple[Found, Any]:
    """Selects inside `value`, which sits at keypath `path` of the whole tree.

    Args:
      value: The subtree to search.
      path: Its keypath from the root of the whole tree.
      finder: What to select.
      rel_start: Length of the keypath of the selected node the search started
        from; keypaths given to a path-taking predicate are relative to it.

    Returns:
      `(found, remainder)`: the selected `(keypath, subtree)` pairs in tree
      order, and `value` with each of them replaced by a `SelectionHole` and
      any pre-existing hole or quote escaped. When nothing changes, the
      remainder is `value` itself.
    """
    if rel_start is None:
        rel_start = len(path)
    match = finder.match
    prune = finder.prune
    matched: list[Any] = []
    if match is None:
        is_leaf = _quotable_with_path
    elif finder.takes_path:
        rel_base = path[rel_start:]

        def is_leaf(p: KeyPath, x: Any) -> bool:
            rel = rel_base + p if rel_base else p
            if match(rel, x):
                matched.append(p)
                return True
            if prune is not None and prune(rel):
                return True
            return type(x) in QUOTABLE

    elif finder.pure:

        def is_leaf(p: KeyPath, x: Any) -> bool:
            return match(x) or type(x) in QUOTABLE

    else:

        def is_leaf(p: KeyPath, x: Any) -> bool:
            if match(x):
                matched.append(x)
                return True
            return type(x) in QUOTABLE

    leaves, treedef = jax.tree_util.tree_flatten_with_path(
        value, is_leaf=is_leaf, is_leaf_takes_path=True
    )
    found: Found = []
    new_leaves = []
    changed = False
    k = 0
    n_matched = len(matched)
    pure = finder.pure
    takes_path = finder.takes_path
    leaves_too = finder.leaves_too
    innermost = finder.innermost
    # Holes are built inline: this loop runs once per selected node.
    new, set_field, hole_type = _new, _set, SelectionHole
    for p, x in leaves:
        if match is None:
            is_match = False
        elif pure:
            is_match = match(x)
        elif k < n_matched and (matched[k] == p if takes_path else matched[k] is x):
            is_match = True
            k += 1
        else:
            is_match = False
        if is_match or leaves_too:
            full = path + p if path else p
            if not is_match and type(x) in QUOTABLE:
                inner_found, inner_rest = descend(x, full, finder, rel_start)
                found.extend(inner_found)
                new_leaves.append(inner_rest)
                changed = True
                continue
            if innermost and is_match and _matches_below(x, full, finder, rel_start):
                inner_found, inner_rest = descend(x, full, finder, rel_start)
                found.extend(inner_found)
                new_leaves.append(inner_rest)
                changed = True
                continue
            found.append((full, x))
            hole = new(hole_type)
            set_field(hole, "path", full)
            new_leaves.append(hole)
            changed = True
        elif type(x) in QUOTABLE:
            inner_found, inner_rest = descend(x, path + p if path else p, finder, rel_start)
            found.extend(inner_found)
            new_leaves.append(inner_rest)
            changed = True
        else:
            new_leaves.append(x)
    if not changed:
        return found, value
    return found, unflatten_checked(treedef, new_leaves)


def _matches_below(node: Any, path: KeyPath, finder: Finder, rel_start: int) -> bool:
    """Whether the predicate accepts some node strictly inside `node` (one flatten)."""
    match = finder.match
    hits: list[bool] = []
    if finder.takes_path:
        rel_base = path[rel_start:]

        def is_leaf(p: KeyPath, x: Any) -> bool:
            if p and match(rel_base + p, x):
                hits.append(True)
                return True
            return False

    else:

        def is_leaf(p: KeyPath, x: Any) -> bool:
            if x is not node and match(x):
                hits.append(True)
                return True
            return False

    jax.tree_util.tree_flatten_with_path(node, is_leaf=is_leaf, is_leaf_takes_path=True)
    return bool(hits)


def _quotable_with_path(p: KeyPath, x: Any) -> bool:
    return type(x) in QUOTABLE


def descend(node: Any, path: KeyPath, finder: Finder, rel_start: int) -> tuple[Found, Any]:
    """Searches the children of an unselected node and rebuilds it, escaping it if needed."""
    level = one_level(node)
    if level is None:
        return [], node
    children, treedef = level
    found: Found = []
    new_children = []
    for key, child in children:
        child_found, child_rest = search(child, (*path, key), finder, rel_start)
        found.extend(child_found)
        new_children.append(child_rest)
    rebuilt = unflatten_checked(treedef, new_children)
    if type(node) in QUOTABLE:
        rebuilt = make_quote(rebuilt)
    return found, rebuilt


def quote_for_remainder(value: Any, path: KeyPath) -> Any:
    """`value` escaped so it can sit, unselected, inside a remainder."""
    return search(value, path, NOTHING)[1]


def childless_finder() -> Finder:
    return Finder(is_empty_node, pure=True, leaves_too=True)


def keypath_finder(relative_keypaths: Iterable[KeyPath], *, holes_inside: bool = True) -> Finder:
    """Selects the given relative keypaths.

    With `holes_inside=False` (the caller knows the searched subtrees hold no
    `SelectionHole` or `SelectionQuote`), subtrees off the wanted paths are
    skipped, which makes selecting one node of a large tree cheap.
    """
    wanted = frozenset(tuple(k) for k in relative_keypaths)
    if holes_inside:
        return Finder(lambda p, x: p in wanted, takes_path=True)
    prefixes = frozenset(k[:i] for k in wanted for i in range(len(k)))
    return Finder(lambda p, x: p in wanted, takes_path=True, prune=lambda p: p not in prefixes)


class _Marker:
    """Stands in for a leaf (or an empty node) while an `.at` accessor runs."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<selected-tree leaf #{self.index}>"


def accessor_keypaths(
    value: Any, accessor: Callable[[Any], Any], multiple: bool | None
) -> tuple[list[KeyPath], bool]:
    """Runs a structural accessor on a copy of `value` and finds what it returned.

    Every leaf and empty node of the copy is a unique marker and every inner
    node is a fresh object, so the returned node(s) are found by identity.

    Returns:
      The keypaths (relative to `value`) of the returned nodes, in tree order,
      and whether `value` holds any `SelectionHole` or `SelectionQuote`.
    """
    holes_seen: list[bool] = []

    def is_leaf(x: Any) -> bool:
        if type(x) in QUOTABLE:
            holes_seen.append(True)
        return is_empty_node(x)

    parts, treedef = jax.tree_util.tree_flatten(value, is_leaf=is_leaf)
    mirror = unflatten_checked(treedef, [_Marker(i) for i in range(len(parts))])
    try:
        result = accessor(mirror)
    except Exception as error:
        error.add_note(
            "(raised by the accessor given to Selection.at; while it runs, every leaf"
            " of the selected subtree is replaced by a placeholder, so the accessor"
            " must only navigate the structure, like `lambda m: m.body.sublayers[2]`.)"
        )
        raise
    return _resolve(mirror, result, multiple), bool(holes_seen)


def _resolve(mirror: Any, result: Any, multiple: bool | None) -> list[KeyPath]:
    if multiple is None:
        located = _locate(mirror, [result])
        if len(located) == 1:
            return list(located.values())
        if isinstance(result, list | tuple) and result:
            located = _locate(mirror, list(result))
            if len(located) == len({id(r) for r in result}):
                return list(located.values())
        _raise_not_found(mirror, result, multiple)
    if not multiple:
        located = _locate(mirror, [result])
        if not located:
            _raise_not_found(mirror, result, multiple)
        return list(located.values())
    if not isinstance(result, list | tuple):
        raise TypeError(
            "Selection.at(..., multiple=True) needs the accessor to return a list or"
            f" tuple of nodes, but it returned {short_repr(result)}. Return e.g."
            " `lambda m: (m.left, m.right)`, or pass multiple=False to select a single node."
        )
    targets = list(result)
    located = _locate(mirror, targets)
    if len(located) != len({id(t) for t in targets}):
        _raise_not_found(mirror, [t for t in targets if id(t) not in located], multiple)
    return list(located.values())


def _locate(mirror: Any, targets: list[Any]) -> dict[int, KeyPath]:
    """Keypaths of the outermost occurrences of `targets` (by identity), in tree order."""
    ids = {id(t) for t in targets}
    leaves = jax.tree_util.tree_flatten_with_path(mirror, is_leaf=lambda x: id(x) in ids)[0]
    located: dict[int, KeyPath] = {}
    for p, x in leaves:
        if id(x) in ids:
            if id(x) in located:
                raise ValueError(
                    "The node returned by the Selection.at accessor occurs at several"
                    f" places ({jax.tree_util.keystr(located[id(x)])} and"
                    f" {jax.tree_util.keystr(p)}), so it is ambiguous which one to select."
                )
            located[id(x)] = p
    return located


def _raise_not_found(mirror: Any, result: Any, multiple: bool | None) -> None:
    missing = result if isinstance(result, list) and multiple else [result]
    for target in missing:
        alone = _locate(mirror, [target])
        if alone:
            raise ValueError(
                "The nodes returned by the Selection.at accessor overlap: the node at"
                f" {jax.tree_util.keystr(next(iter(alone.values())))} lies inside"
                " another returned node, but selected nodes can never contain each"
                " other. Return only the outer node, or only the inner ones."
            )
    raise ValueError(
        f"The Selection.at accessor returned {short_repr(result)}, which is not a node"
        " of the selected subtree. It must return a part of its argument, reached by"
        " attribute access and indexing (e.g. `lambda m: m.body.sublayers[2]`), not a"
        " new object such as a slice `m.sublayers[1:]`, a computed value or a static"
        " field. To select several nodes, return a tuple of them and pass"
        " `multiple=True`."
    )


def check_bool(result: Any, what: str) -> bool:
    """Accepts a Python or NumPy bool from a user predicate; refuses anything else."""
    if result is True or result is False:
        return result
    if isinstance(result, np.bool_):
        return bool(result)
    raise TypeError(
        f"The predicate given to {what} must return a Python bool, but it returned"
        f" {short_repr(result)} of type {type(result).__name__}. Convert it with"
        " bool(...) if it is a concrete scalar; a traced JAX value cannot decide a"
        " selection."
    )


# Metaclass instance checks that depend only on the type of the instance.
_TYPE_ONLY_CHECKS = (type.__instancecheck__, abc.ABCMeta.__instancecheck__)


def _classes_in(classinfo: Any) -> list[Any] | None:
    """The classes of a type, tuple or union of types; None for anything else."""
    if isinstance(classinfo, type):
        return [classinfo]
    if isinstance(classinfo, tuple):
        parts = [_classes_in(c) for c in classinfo]
    elif isinstance(classinfo, types.UnionType) or typing.get_origin(classinfo) is typing.Union:
        parts = [_classes_in(c) for c in typing.get_args(classinfo)]
    else:
        return None
    if any(p is None for p in parts):
        return None
    return [c for p in parts for c in p]


def instance_predicate(classinfo: Any) -> Callable[[Any], bool]:
    """`lambda x: isinstance(x, classinfo)`, answered once per type where that is safe.

    Struct classes have an ABC metaclass, whose isinstance is several times
    slower than a dict lookup; a search asks it once per node.
    """
    classes = _classes_in(classinfo)
    if classes is None or any(type(c).__instancecheck__ not in _TYPE_ONLY_CHECKS for c in classes):
        return lambda x: isinstance(x, classinfo)
    cache: dict[type, bool] = {}

    def match(x: Any) -> bool:
        kind = type(x)
        try:
            return cache[kind]
        except KeyError:
            result = cache[kind] = isinstance(x, classinfo)
            return result

    return match
