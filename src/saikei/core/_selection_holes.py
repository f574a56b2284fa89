"""The placeholders a Selection leaves in its remainder, and how they are filled back in.

A `Selection`'s remainder is the original tree with every selected subtree cut
out and a `SelectionHole` left in its place. Trees may themselves contain
Selections (a selection of a selection), so a remainder can hold holes that
belong to an *inner* selection. Those are escaped with `SelectionQuote`: while a
selection is built, every `SelectionHole` or `SelectionQuote` already present in
the tree is wrapped in one more `SelectionQuote`, and rebuilding the tree strips
exactly one level again. The holes of a remainder that are not quoted are
therefore exactly the holes of that remainder's own selection.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._tree_util import tree_flatten_exactly_one_level

KeyPath = tuple[Any, ...]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 6

_new = object.__new__
_set = object.__setattr__


@pytree_dataclass
class SelectionHole(Struct):
    """Marks the place in a `Selection`'s remainder where a selected subtree was.

    Holes have no pytree children; the keypath of the subtree they stand for
    (relative to the root of the selected tree) is static metadata.

    Args:
      path: Keypath of the selected subtree this hole stands for.

    Example:
      >>> from saikei import sk
      >>> sk.select({"a": 1, "b": 2}).at(lambda t: t["a"]).remainder
      {'a': SelectionHole(path=(DictKey(key='a'),)), 'b': 2}
    """

    path: KeyPath = dataclasses.field(metadata={"pytree_node": False})


@pytree_dataclass
class SelectionQuote(Struct):
    """Escapes a `SelectionHole` or `SelectionQuote` that was already in a selected tree.

    When you select inside a tree that itself contains a `Selection`, the inner
    selection's holes must not be mistaken for the outer selection's own holes.
    Building a selection therefore wraps every pre-existing hole or quote of its
    remainder in one more `SelectionQuote`, and rebuilding the tree removes one
    level again, so selections of selections round-trip exactly. You rarely
    create one yourself.

    Args:
      quoted: The escaped `SelectionHole` or `SelectionQuote`.

    Example:
      >>> from saikei import sk
      >>> inner = sk.select([1, 2]).at(lambda t: t[0])
      >>> outer = sk.select(inner).at_instances_of(int)
      >>> outer.remainder.remainder[0]
      SelectionQuote(quoted=SelectionHole(path=(SequenceKey(idx=0),)))
      >>> outer.deselect() == inner
      True
    """

    quoted: Any


# Exact types: Struct classes use an ABC metaclass, whose isinstance is slow in
# these per-node checks, and holes and quotes are never subclassed.
QUOTABLE = frozenset((SelectionHole, SelectionQuote))


def make_hole(path: KeyPath) -> SelectionHole:
    """Builds a hole without going through the dataclass constructor (hot path)."""
    hole = _new(SelectionHole)
    _set(hole, "path", path)
    return hole


def make_quote(value: Any) -> SelectionQuote:
    quote = _new(SelectionQuote)
    _set(quote, "quoted", value)
    return quote


def is_quotable(x: Any) -> bool:
    return type(x) in QUOTABLE


def contains_quotable(tree: Any) -> bool:
    """Whether `tree` holds a `SelectionHole` or `SelectionQuote` anywhere."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=is_quotable)
    return any(type(leaf) in QUOTABLE for leaf in leaves)


def short_repr(value: Any) -> str:
    """A one-line, length-limited repr for error messages (arrays can be huge)."""
    if isinstance(value, jax.Array | np.ndarray):
        return f"{type(value).__name__}(shape={value.shape}, dtype={value.dtype})"
    return _REPR.repr(value)


_KNOWN_LEAF_TYPES = (int, float, complex, str, bytes, np.ndarray, np.generic, jax.Array)


# Struct has an ABC metaclass, whose isinstance is slow; remember the answer per type.
_IS_STRUCT: dict[type, bool] = {}


def is_empty_node(x: Any) -> bool:
    """Whether `x` is a pytree node without children, such as `None`, `()` or `{}`."""
    if x is None:
        return True
    kind = type(x)
    if kind is tuple or kind is list or kind is dict:
        return not x
    if isinstance(x, _KNOWN_LEAF_TYPES):
        return False
    is_struct = _IS_STRUCT.get(kind)
    if is_struct is None:
        is_struct = _IS_STRUCT[kind] = isinstance(x, Struct)
    if is_struct:
        return not x.tree_flatten()[0]
    leaves = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)[0]
    return not leaves


def one_level(node: Any) -> tuple[list[tuple[Any, Any]], jax.tree_util.PyTreeDef] | None:
    """`(children with keys, treedef)` of one pytree level, or None for a leaf."""
    return tree_flatten_exactly_one_level(node)


def _first_refusing_node(treedef: jax.tree_util.PyTreeDef, leaves: list[Any]) -> Any:
    """The innermost node type whose unflatten raises when given these leaves."""
    position = 0
    for child in treedef.children():
        count = child.num_leaves
        part = leaves[position : position + count]
        position += count
        if child.num_nodes == 1 and count == 1:
            continue
        try:
            child.unflatten(part)
        except Exception:  # Locating the failure; the caller re-raises.
            return _first_refusing_node(child, part)
    node_data = treedef.node_data()
    return node_data[0] if node_data else None


def unflatten_checked(treedef: jax.tree_util.PyTreeDef, leaves: list[Any]) -> Any:
    """`treedef.unflatten(leaves)`, explaining which node type refused its new children."""
    try:
        return treedef.unflatten(leaves)
    except Exception as error:
        node_type = _first_refusing_node(treedef, leaves)
        name = getattr(node_type, "__qualname__", repr(node_type))
        raise ValueError(
            f"Could not rebuild a pytree node of type {name}: its unflatten function"
            f" raised {type(error).__name__}: {error}. Selections put SelectionHole"
            " placeholders (and, when you modify a selection, your new values) where"
            f" the selected subtrees were, and {name} refuses such children. Select"
            f" the whole {name} node instead of something inside it (for instance"
            f" with `.at_instances_of({name})`), or make its unflatten function"
            " accept arbitrary children."
        ) from error


def _quote_aware_leaf(x: Any) -> bool:
    return type(x) in QUOTABLE


def _direct_hole_parent(x: Any) -> bool:
    if type(x) in QUOTABLE:
        return True
    kind = type(x)
    if kind is list or kind is tuple:
        for item in x:
            if type(item) is SelectionHole:
                return True
    return False


def fill_holes(
    remainder: Any,
    on_hole: Callable[[SelectionHole], Any],
    *,
    unquote: bool,
    on_leaf: Callable[[Any], Any] | None = None,
    on_sequence: Callable[[Any, Callable[[Any], Any]], Any] | None = None,
) -> Any:
    """Rebuilds `remainder`, replacing each of its own (unquoted) holes.

    Args:
      remainder: A Selection's remainder (or part of one).
      on_hole: Gives the replacement for one of the remainder's own holes.
      unquote: Strip one level of `SelectionQuote` (rebuilding the original
        tree) if True; keep the quoting (building another remainder) if False.
      on_leaf: If given, maps every ordinary leaf outside the holes.
      on_sequence: If given, called as `on_sequence(seq, fill)` for each list or
        tuple that directly contains holes, instead of filling them one by one;
        `fill` rebuilds one non-hole element.

    Returns:
      The rebuilt tree.
    """
    is_leaf = _direct_hole_parent if on_sequence is not None else _quote_aware_leaf
    leaves, treedef = jax.tree_util.tree_flatten(remainder, is_leaf=is_leaf)

    def fill(subtree: Any) -> Any:
        return fill_holes(
            subtree, on_hole, unquote=unquote, on_leaf=on_leaf, on_sequence=on_sequence
        )

    new_leaves = []
    changed = on_leaf is not None
    for leaf in leaves:
        kind = type(leaf)
        if kind is SelectionHole:
            new_leaves.append(on_hole(leaf))
        elif kind is SelectionQuote:
            new_leaves.append(_fill_quote(leaf, fill, unquote))
        elif on_sequence is not None and (kind is list or kind is tuple):
            new_leaves.append(on_sequence(leaf, fill))
        elif on_leaf is not None:
            new_leaves.append(on_leaf(leaf))
        else:
            new_leaves.append(leaf)
            continue
        changed = True
    # An untouched subtree is returned as is, keeping the identity of its nodes.
    return unflatten_checked(treedef, new_leaves) if changed else remainder


def _fill_quote(quote: SelectionQuote, fill: Callable[[Any], Any], unquote: bool) -> Any:
    inner = quote.quoted
    if type(inner) is SelectionHole:
        # A hole of an inner selection: it is childless, nothing of ours inside.
        return inner if unquote else quote
    if type(inner) is SelectionQuote:
        rebuilt = make_quote(fill(inner.quoted))
        return rebuilt if unquote else make_quote(rebuilt)
    raise ValueError(
        f"Malformed selection remainder: found SelectionQuote({short_repr(inner)}), but a"
        " quote in a remainder only ever wraps a SelectionHole or another"
        " SelectionQuote. Build selections with sk.select(...) rather than by hand."
    )


class HoleLookup:
    """Matches a remainder's holes to the selected entries, in tree order.

    Holes appear in the remainder in the same order as the entries of
    `selected_by_path`, and normally share their keypath object, so the match is
    an identity check; a dict lookup covers anything else.
    """

    __slots__ = ("_index", "_keys", "_next", "_seen", "_used")

    def __init__(self, keys: list[KeyPath]) -> None:
        self._keys = keys
        self._next = 0
        self._index: dict[KeyPath, int] | None = None
        self._seen = bytearray(len(keys))
        self._used = 0

    def position(self, hole: SelectionHole) -> int:
        """Index in `selected_by_path` of the entry this hole stands for."""
        k = self._next
        keys = self._keys
        if not (k < len(keys) and keys[k] is hole.path):
            if self._index is None:
                self._index = {path: i for i, path in enumerate(keys)}
            try:
                k = self._index[hole.path]
            except KeyError:
                raise ValueError(
                    "Malformed selection: its remainder has a SelectionHole at"
                    f" {jax.tree_util.keystr(hole.path)}, but selected_by_path has no"
                    " entry for that keypath. Build selections with sk.select(...)."
                ) from None
        if self._seen[k]:
            raise ValueError(
                "Malformed selection: its remainder has two SelectionHoles for"
                f" {jax.tree_util.keystr(keys[k])}."
            )
        self._seen[k] = 1
        self._next = k + 1
        self._used += 1
        return k

    def check_all_used(self) -> None:
        if self._used != len(self._keys):
            missing = [p for p, s in zip(self._keys, self._seen) if not s]
            raise ValueError(
                f"Malformed selection: {len(missing)} selected value(s) have no"
                f" SelectionHole in the remainder (first: {jax.tree_util.keystr(missing[0])})."
                " Build selections with sk.select(...) rather than by hand."
            )


def fill_values(
    remainder: Any,
    keys: list[KeyPath],
    values: list[Any],
    *,
    unquote: bool,
    on_leaf: Callable[[Any], Any] | None = None,
) -> Any:
    """Rebuilds `remainder` with the hole for `keys[i]` replaced by `values[i]`.

    The common case (no quotes, holes in the order of `keys`) is one flatten,
    one loop and one unflatten; anything else goes through `fill_holes`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(remainder, is_leaf=_quote_aware_leaf)
    count = len(keys)
    k = 0
    new_leaves = []
    append = new_leaves.append
    for leaf in leaves:
        kind = type(leaf)
        if kind is SelectionHole:
            if k < count and keys[k] is leaf.path:
                append(values[k])
                k += 1
                continue
            break
        if kind is SelectionQuote:
            break
        append(leaf if on_leaf is None else on_leaf(leaf))
    else:
        if k == count:
            return unflatten_checked(treedef, new_leaves)
    lookup = HoleLookup(keys)
    position = lookup.position
    tree = fill_holes(
        remainder, lambda hole: values[position(hole)], unquote=unquote, on_leaf=on_leaf
    )
    lookup.check_all_used()
    return tree
