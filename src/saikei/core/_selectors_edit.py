"""Selection methods that return a modified tree: replace, restructure lists, partition.

`SelectionEdits` is a base class of `Selection`; it lives here to keep the
selection module readable. Everything here works by filling the holes of the
selection's remainder with new values, in a single rebuild of the tree.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jax

from saikei.core._partitioning import NotInThisPartition, SelectedMark, prune_to_selected
from saikei.core._selection_holes import (
    HoleLookup,
    KeyPath,
    SelectionHole,
    fill_holes,
    one_level,
    short_repr,
)
from saikei.core._selection_search import Finder, search
from saikei.core._struct import Struct
from saikei.core._tree_util import pretty_keystr

if TYPE_CHECKING:
    from saikei.core._selectors import Selection

_new = object.__new__
_set = object.__setattr__


class SelectionEdits:
    """The modifying methods of `Selection` (see there)."""

    selected_by_path: collections.OrderedDict[KeyPath, Any]
    remainder: Any

    if TYPE_CHECKING:
        # Defined by Selection.
        def _rebuild(
            self, values: list[Any], on_leaf: Callable[[Any], Any] | None = None
        ) -> Any: ...

        def _at_keypaths(
            self, keypaths: Iterable[KeyPath], what: str
        ) -> tuple[Selection, dict[KeyPath, KeyPath]]: ...

    def _derive(self, selected_by_path: collections.OrderedDict, remainder: Any) -> Selection:
        """A new selection of the same type, built without the dataclass constructor."""
        selection = _new(type(self))
        _set(selection, "selected_by_path", selected_by_path)
        _set(selection, "remainder", remainder)
        return selection

    def apply(
        self,
        fn: Callable[..., Any],
        *,
        with_keypath: bool = False,
        keep_selected: bool = False,
    ) -> Any:
        """Replaces each selected subtree with `fn(subtree)`.

        Args:
          fn: `fn(subtree)`, or `fn(keypath, subtree)` if `with_keypath`.
          with_keypath: Pass the keypath (from the root) as the first argument.
          keep_selected: Return a Selection of the new values instead of the
            rebuilt tree.

        Returns:
          The rebuilt tree, or the selection of new values if `keep_selected`.

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": 1, "b": 2}).at_children().apply(lambda x: x + 1)
          {'a': 2, 'b': 3}
        """
        if with_keypath:
            values = [fn(p, v) for p, v in self.selected_by_path.items()]
        else:
            values = [fn(v) for v in self.selected_by_path.values()]
        return self._finish(values, keep_selected)

    def _finish(self, values: list[Any], keep_selected: bool) -> Any:
        if keep_selected:
            return self._derive(
                collections.OrderedDict(zip(self.selected_by_path.keys(), values)), self.remainder
            )
        return self._rebuild(values)

    def apply_with_selected_index(
        self, fn: Callable[[int, Any], Any], *, keep_selected: bool = False
    ) -> Any:
        """Replaces the i-th selected subtree (in tree order) with `fn(i, subtree)`.

        Example:
          >>> from saikei import sk
          >>> sk.select(["a", "b"]).at_children().apply_with_selected_index(lambda i, x: x * (i + 1))
          ['a', 'bb']
        """
        values = [fn(i, v) for i, v in enumerate(self.selected_by_path.values())]
        return self._finish(values, keep_selected)

    def set(self, value: Any) -> Any:
        """Replaces every selected subtree with `value`.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a", 2]).at_instances_of(int).set(0)
          [0, 'a', 0]
        """
        return self._rebuild([value] * len(self.selected_by_path))

    def set_sequence(self, values: Iterable[Any]) -> Any:
        """Replaces the selected subtrees, in tree order, with the given values.

        Raises:
          ValueError: If the number of values differs from the number selected.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a", 2]).at_instances_of(int).set_sequence(["x", "y"])
          ['x', 'a', 'y']
        """
        values = list(values)
        if len(values) != len(self.selected_by_path):
            raise ValueError(
                f"set_sequence got {len(values)} value(s) for {len(self.selected_by_path)}"
                " selected subtree(s); give exactly one value per selected subtree."
            )
        return self._rebuild(values)

    def set_by_path(self, replacer: Mapping[KeyPath, Any] | Callable[[KeyPath], Any]) -> Any:
        """Replaces each selected subtree with the value for its keypath.

        Args:
          replacer: A mapping from every selected keypath (from the root) to its
            new value, e.g. a modified `get_by_path()`; or a function from
            keypath to new value.

        Raises:
          KeyError: If the mapping lacks a selected keypath or has extra ones.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> sel = sk.select({"a": 1.0, "b": 2.0}).at_children()
          >>> sel.set_by_path({p: v * 2 for p, v in sel.get_by_path().items()})
          {'a': 2.0, 'b': 4.0}
        """
        keys = list(self.selected_by_path.keys())
        if callable(replacer) and not isinstance(replacer, Mapping):
            return self._rebuild([replacer(p) for p in keys])
        missing = [p for p in keys if p not in replacer]
        if missing or len(replacer) != len(keys):
            extra = [p for p in replacer if p not in self.selected_by_path]
            problem = (
                f"it has no value for {jax.tree_util.keystr(missing[0]) or 'the root'}"
                if missing
                else f"it has keypath {jax.tree_util.keystr(extra[0])}, which is not selected"
            )
            raise KeyError(
                f"set_by_path needs one value for each selected keypath, but {problem}"
                f" ({len(missing)} missing, {len(extra)} not selected). Start from"
                " .get_by_path() to get the keys right."
            )
        return self._rebuild([replacer[p] for p in keys])

    def select_and_set_by_path(self, replacements_by_path: Mapping[KeyPath, Any]) -> Any:
        """Replaces subtrees given by keypaths relative to each selected subtree.

        For a selection of the root (`sk.select(tree)`), the keypaths are from
        the root of the tree. Same as `.at_keypaths(keys)` followed by setting
        each selected subtree to the value of its relative keypath.

        Args:
          replacements_by_path: Mapping from relative keypath to new value.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> sk.select({"a": 1, "b": 2}).select_and_set_by_path({(jax.tree_util.DictKey("b"),): 5})
          {'a': 1, 'b': 5}
        """
        replacements = {tuple(k): v for k, v in replacements_by_path.items()}
        refined, relative = self._at_keypaths(replacements.keys(), "select_and_set_by_path")
        return refined._rebuild([replacements[relative[p]] for p in refined.selected_by_path])

    def insert_before(self, value: Any, and_select: bool = False) -> Any:
        """Inserts `value` before each selected element of a list or tuple.

        Args:
          value: The element to insert (the same object at every place).
          and_select: Return a Selection of the inserted elements instead of
            the rebuilt tree.

        Raises:
          ValueError: If a selected node is not an element of a list or tuple.

        Example:
          >>> from saikei import sk
          >>> sk.select({"xs": [1, 2]}).at(lambda t: t["xs"][1]).insert_before(9)
          {'xs': [1, 9, 2]}
        """
        return _insert(self, value, before=True, and_select=and_select)

    def insert_after(self, value: Any, and_select: bool = False) -> Any:
        """Inserts `value` after each selected element of a list or tuple.

        Args:
          value: The element to insert (the same object at every place).
          and_select: Return a Selection of the inserted elements instead of
            the rebuilt tree.

        Raises:
          ValueError: If a selected node is not an element of a list or tuple.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2]).at_children().insert_after(0)
          [1, 0, 2, 0]
        """
        return _insert(self, value, before=False, and_select=and_select)

    def remove_from_parent(self) -> Any:
        """Removes each selected element from the list or tuple that holds it.

        Raises:
          ValueError: If a selected node is not an element of a list or tuple.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a", 2]).at_instances_of(str).remove_from_parent()
          [1, 2]
        """
        return _inline(self, lambda path, x: (), "remove_from_parent")

    def apply_and_inline(self, fn: Callable[..., Iterable[Any]], with_keypath: bool = False) -> Any:
        """Replaces each selected list/tuple element with the elements `fn` returns.

        Args:
          fn: `fn(subtree)` (or `fn(keypath, subtree)` if `with_keypath`)
            returning an iterable of new elements; `[]` removes the element.
          with_keypath: Pass the keypath as the first argument.

        Raises:
          ValueError: If a selected node is not an element of a list or tuple.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2]).at_children().apply_and_inline(lambda x: [x] * x)
          [1, 2, 2]
        """
        if with_keypath:
            return _inline(self, fn, "apply_and_inline")
        return _inline(self, lambda path, x: fn(x), "apply_and_inline")

    def partition(self, at_leaves: bool = False) -> tuple[Any, Any]:
        """Splits the tree into `(selected_part, remainder_part)`; `sk.combine` undoes it.

        Missing parts are marked with `sk.NotInThisPartition()`, a childless
        node, so both parts pass through JAX transformations.

        Args:
          at_leaves: Split at pytree leaves, so both parts have the structure
            of the original tree. Otherwise a whole selected subtree is one
            `NotInThisPartition` in the remainder part, and every branch
            holding nothing selected is one `NotInThisPartition` (at its
            highest point) in the selected part, as in penzai.

        Returns:
          The selected part and the remainder part.

        Example:
          >>> from saikei import sk
          >>> sk.select({"w": [1.0, 2.0], "n": 3}).at(lambda t: t["w"]).partition()
          ({'n': NotInThisPartition(), 'w': [1.0, 2.0]}, {'n': 3, 'w': NotInThisPartition()})
        """
        return _partition(self, at_leaves)


def _inline(
    selection: Selection, expand: Callable[[KeyPath, Any], Iterable[Any]], what: str
) -> Any:
    """Rebuilds the tree, splicing `expand(path, value)` in place of each selected element.

    Every selected node must be an element of a list or tuple; all selected
    elements of one list are handled in the same rebuild.
    """
    items = list(selection.selected_by_path.items())
    for path, _ in items:
        if not path or not isinstance(path[-1], jax.tree_util.SequenceKey):
            raise _not_in_sequence(selection, path, what)
    lookup = HoleLookup([p for p, _ in items])
    position = lookup.position

    def on_sequence(sequence: list | tuple, fill: Callable[[Any], Any]) -> list | tuple:
        new_items: list[Any] = []
        for item in sequence:
            if type(item) is not SelectionHole:
                new_items.append(fill(item))
                continue
            path, value = items[position(item)]
            replacement = expand(path, value)
            try:
                new_items.extend(replacement)
            except TypeError:
                raise TypeError(
                    f"{what}: the function must return an iterable of new elements, but for"
                    f" the element at {jax.tree_util.keystr(path)} it returned"
                    f" {short_repr(replacement)}. Return e.g. `[x]` to keep it, `[]` to"
                    " drop it."
                ) from None
        return type(sequence)(new_items)

    def on_hole(hole: SelectionHole) -> Any:
        # Only reached for holes whose parent is not a plain list or tuple.
        raise _not_in_sequence(selection, hole.path, what)

    tree = fill_holes(selection.remainder, on_hole, unquote=True, on_sequence=on_sequence)
    lookup.check_all_used()
    return tree


class _Inserted:
    """Marks an inserted element so that it can be selected after the rebuild."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _insert(selection: Selection, value: Any, *, before: bool, and_select: bool) -> Any:
    """Inserts `value` next to every selected list/tuple element."""
    what = "insert_before" if before else "insert_after"
    # A value whose class defines `__saikei_insert_copy__` (e.g. a saver, whose
    # variable must not be shared) gets a fresh copy at every place but the first.
    copy = getattr(type(value), "__saikei_insert_copy__", None)
    places = itertools.count()

    def new(path: Any) -> Any:
        return value if copy is None or next(places) == 0 else copy(value)

    if not and_select:
        if before:
            return _inline(selection, lambda path, x: (new(path), x), what)
        return _inline(selection, lambda path, x: (x, new(path)), what)
    if before:
        tree = _inline(selection, lambda path, x: (_Inserted(new(path)), x), what)
    else:
        tree = _inline(selection, lambda path, x: (x, _Inserted(new(path))), what)
    found, remainder = search(tree, (), Finder(lambda x: type(x) is _Inserted, pure=True))
    return selection._derive(
        collections.OrderedDict((path, marker.value) for path, marker in found), remainder
    )


def _not_in_sequence(selection: Selection, path: KeyPath, what: str) -> ValueError:
    if not path:
        return ValueError(
            f"{what} needs every selected node to be an element of a list or tuple, but"
            " the root of the tree is selected, and it has no parent. Select an element"
            " of a list inside it, e.g. `.at(lambda m: m.sublayers[0])`."
        )
    tree = selection.deselect()
    parent = tree
    for key in path[:-1]:
        level = one_level(parent)
        parent = next(child for k, child in (level[0] if level else []) if k == key)
    where = _describe(path, tree)
    message = (
        f"{what} needs every selected node to be an element of a list or tuple, but the"
        f" node at {where} has a parent of type {type(parent).__name__}."
    )
    if isinstance(parent, Struct):
        message += (
            " To insert or remove layers there, wrap the layer in an sk.nn.Sequential,"
            " whose `sublayers` list can be edited, or select an element of an existing"
            " list instead (e.g. `.at(lambda m: m.sublayers[0])`)."
        )
    elif isinstance(parent, dict):
        message += (
            " Dict entries have keys, not positions: change the entry with .set(...) or"
            " .apply(...), or select an element of a list instead."
        )
    else:
        message += (
            " Only plain lists and tuples can change length; select an element of a"
            " list or tuple instead."
        )
    return ValueError(message)


def _describe(path: KeyPath, tree: Any) -> str:
    try:
        return pretty_keystr(path, tree)
    except Exception:
        return jax.tree_util.keystr(path)


_NOT_HERE = NotInThisPartition()


def _not_here(_: Any) -> NotInThisPartition:
    return _NOT_HERE


def _partition(selection: Selection, at_leaves: bool) -> tuple[Any, Any]:
    """Splits a selection's tree into `(selected_part, remainder_part)`."""
    values = list(selection.selected_by_path.values())
    if at_leaves:
        selected_part = selection._rebuild(values, on_leaf=_not_here)
        hidden = [jax.tree_util.tree_map(_not_here, v) for v in values]
        remainder_part = selection._rebuild(hidden)
    else:
        # One placeholder at the top of every branch with nothing selected.
        selected_part = prune_to_selected(selection._rebuild([SelectedMark(v) for v in values]))
        remainder_part = selection._rebuild([_NOT_HERE] * len(values))
    return selected_part, remainder_part
