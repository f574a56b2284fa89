"""Selections: pick out parts of any pytree, then read, replace or restructure them.

`select(tree)` starts a `Selection` of the whole tree; `.at(...)`,
`.at_instances_of(...)`, `.at_subtrees_where(...)` and friends narrow it down;
`.apply(...)`, `.set(...)`, `.insert_after(...)`, `.partition()` and friends
return a modified copy of the tree. Selected subtrees never overlap, and
deselecting without changes gives back an equal tree.
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

from saikei.core import _viz_hooks
from saikei.core._selection_holes import (
    HoleLookup,
    KeyPath,
    SelectionHole,
    SelectionQuote,
    contains_quotable,
    fill_holes,
    fill_values,
    make_hole,
    make_quote,
    one_level,
    short_repr,
    unflatten_checked,
)
from saikei.core._selection_search import (
    Finder,
    accessor_keypaths,
    check_bool,
    childless_finder,
    instance_predicate,
    keypath_finder,
    quote_for_remainder,
    search,
)
from saikei.core._selectors_edit import SelectionEdits
from saikei.core._struct import Struct, pytree_dataclass
from saikei.core.named_axes._named_array import NamedArray

__all__ = ["Selection", "SelectionHole", "SelectionQuote", "select"]

_new = object.__new__
_set = object.__setattr__


def _make_selection(selected_by_path: collections.OrderedDict, remainder: Any) -> Selection:
    selection = _new(Selection)
    _set(selection, "selected_by_path", selected_by_path)
    _set(selection, "remainder", remainder)
    return selection


def select(tree: Any) -> Selection:
    """Starts a selection of the whole `tree` (any pytree).

    Args:
      tree: The tree to select in.

    Returns:
      A `Selection` whose only selected node is the root of `tree`.

    Example:
      >>> from saikei import sk
      >>> sk.select({"a": [1, 2], "b": 3}).at(lambda t: t["a"][1]).set(20)
      {'a': [1, 20], 'b': 3}
    """
    return _make_selection(collections.OrderedDict([((), tree)]), make_hole(()))


@pytree_dataclass
class Selection(SelectionEdits, Struct):
    """A tree with some non-overlapping subtrees selected.

    A Selection is itself a pytree (a Struct). Its selected subtrees, keyed by
    their keypath from the root, live in `selected_by_path` (in tree order);
    the rest of the tree is `remainder`, with a `SelectionHole` where each
    selected subtree was. Build one with `sk.select(tree)` and refine it.

    Attributes:
      selected_by_path: Ordered mapping from keypath to selected subtree.
      remainder: The tree with the selected subtrees replaced by holes.

    Example:
      >>> from saikei import sk
      >>> sel = sk.select({"a": 1, "b": "x", "c": 2}).at_instances_of(int)
      >>> sel.count()
      2
      >>> sel.apply(lambda v: v * 10)
      {'a': 10, 'b': 'x', 'c': 20}
    """

    selected_by_path: collections.OrderedDict[KeyPath, Any]
    remainder: Any

    # ------------------------------------------------------------------ inspect

    def count(self) -> int:
        """The number of selected subtrees.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a", 2]).at_instances_of(int).count()
          2
        """
        return len(self.selected_by_path)

    def __len__(self) -> int:
        return len(self.selected_by_path)

    def __treescope_root_repr__(self) -> Any:
        # the viz layer registers the renderer (core never imports it).
        return _viz_hooks.require("selection_root", "Rendering a Selection")(self)

    def show_selection(self) -> None:
        """Displays the tree with every selected subtree outlined.

        In IPython this is an interactive treescope rendering; elsewhere the
        text rendering is printed (the outline becomes comment lines).

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2]).at(lambda t: t[0]).show_selection()  # doctest: +ELLIPSIS
          [
            #╭┄...┄╮
            1
            #╰┄...┄╯
            ,
            2,
          ]
        """
        _viz_hooks.require("display", "Selection.show_selection()")(self)

    def show_value(self) -> None:
        """Displays the original tree, expanded down to the selected subtrees.

        In IPython this is an interactive treescope rendering; elsewhere the
        text rendering is printed.

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": [1, 2], "b": [3]}).at(lambda t: t["a"][0]).show_value()
          {
            'a': [
              1,
              2,
            ],
            'b': [3],
          }
        """
        render = _viz_hooks.require("value_focused_root", "Selection.show_value()")
        _viz_hooks.require("display_root", "Selection.show_value()")(render(self))

    def is_empty(self) -> bool:
        """Whether nothing is selected.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2]).at_instances_of(str).is_empty()
          True
        """
        return not self.selected_by_path

    def get(self) -> Any:
        """The selected subtree, when exactly one is selected.

        Raises:
          ValueError: If zero or several subtrees are selected.

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": [1, 2]}).at(lambda t: t["a"][0]).get()
          1
        """
        count = len(self.selected_by_path)
        if count != 1:
            shown = ", ".join(jax.tree_util.keystr(p) or "<root>" for p in self.get_keypaths()[:5])
            where = f" (at {shown}{', ...' if count > 5 else ''})" if count else ""
            raise ValueError(
                f"Selection.get() needs exactly one selected subtree, but {count} are"
                f" selected{where}. Use .get_sequence() or .get_by_path() for several,"
                " or narrow the selection first (e.g. .pick_nth_selected(0))."
            )
        return next(iter(self.selected_by_path.values()))

    def get_sequence(self) -> tuple[Any, ...]:
        """The selected subtrees, in tree order.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a", 2]).at_instances_of(int).get_sequence()
          (1, 2)
        """
        return tuple(self.selected_by_path.values())

    def get_by_path(self) -> collections.OrderedDict[KeyPath, Any]:
        """A new ordered dict from keypath to selected subtree.

        Example:
          >>> from saikei import sk
          >>> dict(sk.select({"a": 1}).at(lambda t: t["a"]).get_by_path())
          {(DictKey(key='a'),): 1}
        """
        return collections.OrderedDict(self.selected_by_path)

    def get_keypaths(self) -> tuple[KeyPath, ...]:
        """The keypaths of the selected subtrees, in tree order.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a"]).at_instances_of(str).get_keypaths()
          ((SequenceKey(idx=1),),)
        """
        return tuple(self.selected_by_path.keys())

    def assert_count_is(self, count: int) -> Selection:
        """Checks how many subtrees are selected, and returns the selection unchanged.

        Args:
          count: The expected number of selected subtrees.

        Returns:
          This selection, so calls can be chained.

        Raises:
          AssertionError: If the count differs; the message gives the actual count.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2]).at_instances_of(int).assert_count_is(2).set(0)
          [0, 0]
        """
        if len(self.selected_by_path) != count:
            raise AssertionError(
                f"Expected {count} selected subtree(s), but {len(self.selected_by_path)}"
                " are selected."
            )
        return self

    def deselect(self) -> Any:
        """Rebuilds the whole tree from the selected subtrees and the remainder.

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": 1, "b": 2}).at(lambda t: t["a"]).deselect()
          {'a': 1, 'b': 2}
        """
        return self._rebuild(list(self.selected_by_path.values()))

    def _rebuild(self, values: list[Any], on_leaf: Callable[[Any], Any] | None = None) -> Any:
        """The tree with the i-th hole filled by `values[i]` (quoting undone)."""
        keys = list(self.selected_by_path.keys())
        return fill_values(self.remainder, keys, values, unquote=True, on_leaf=on_leaf)

    # ------------------------------------------------------------------- refine

    def _refine(self, per_node: Callable[[KeyPath, Any], tuple[list, Any]]) -> Selection:
        """Runs a search in every selected subtree and merges the results."""
        items = self.selected_by_path.items()
        found: list[tuple[KeyPath, Any]] = []
        rests: list[Any] = []
        for path, value in items:
            node_found, rest = per_node(path, value)
            found.extend(node_found)
            rests.append(rest)
        keys = list(self.selected_by_path.keys())
        remainder = fill_values(self.remainder, keys, rests, unquote=False)
        return _make_selection(collections.OrderedDict(found), remainder)

    def at(self, accessor_fn: Callable[[Any], Any], multiple: bool | None = None) -> Selection:
        """Selects the part(s) of each selected subtree that an accessor function returns.

        The accessor must be structural, like `lambda m: m.body.sublayers[2]`:
        it runs on a copy of each selected subtree whose leaves are replaced by
        placeholders, and what it returns is found in the tree by identity.

        With `multiple=None` (the default), a returned object that is itself a
        node of the tree is selected as one node, even if it is a list or tuple
        (so `lambda m: m.sublayers` selects the whole list); otherwise, a
        returned list or tuple whose elements are all nodes selects each
        element. `multiple=False` always selects one node; `multiple=True`
        always selects each element of the returned list or tuple.

        Args:
          accessor_fn: Maps a selected subtree to one of its parts, or to a
            list or tuple of its parts.
          multiple: Whether the accessor returns several parts (see above).

        Returns:
          A selection of the returned part(s) of every selected subtree.

        Example:
          >>> from saikei import sk
          >>> tree = {"a": [1, 2, 3], "b": 4}
          >>> sk.select(tree).at(lambda t: t["a"][1]).set(20)
          {'a': [1, 20, 3], 'b': 4}
          >>> sk.select(tree).at(lambda t: t["a"], multiple=True).apply(lambda x: -x)
          {'a': [-1, -2, -3], 'b': 4}
        """

        def per_node(path: KeyPath, value: Any) -> tuple[list, Any]:
            relative, holes_inside = accessor_keypaths(value, accessor_fn, multiple)
            return search(value, path, keypath_finder(relative, holes_inside=holes_inside))

        return self._refine(per_node)

    def at_instances_of(
        self, cls: type | tuple[type, ...] | Any, innermost: bool = False
    ) -> Selection:
        """Selects the subtrees that are instances of a type (or of any of several).

        Args:
          cls: A type, a tuple of types, or a union such as `int | float`.
          innermost: Select the deepest instances instead of the outermost.

        Returns:
          A selection of the matching subtrees; nested matches are not
          selected (they are inside a selected one), unless `innermost`.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, "a", [2.5, "b"]]).at_instances_of(int | float).apply(str)
          ['1', 'a', ['2.5', 'b']]
        """
        try:
            isinstance(None, cls)
        except TypeError:
            raise TypeError(
                "at_instances_of needs a type, a tuple of types or a union of types,"
                f" got {short_repr(cls)}. For other tests use .at_subtrees_where(fn)."
            ) from None
        finder = Finder(instance_predicate(cls), pure=True, innermost=innermost)
        return self._refine(lambda path, value: search(value, path, finder))

    def at_subtrees_where(
        self,
        filter_fn: Callable[..., bool],
        *,
        with_keypath: bool = False,
        absolute_keypath: bool = False,
        innermost: bool = False,
    ) -> Selection:
        """Selects the subtrees for which a predicate returns True.

        The predicate sees every node (inner nodes and leaves) of each selected
        subtree, outermost first, and must return a bool. Once it accepts a
        node, nothing inside that node is considered (unless `innermost`).

        Args:
          filter_fn: `fn(subtree) -> bool`, or `fn(keypath, subtree) -> bool` if
            `with_keypath`.
          with_keypath: Pass the node's keypath as the first argument.
          absolute_keypath: Give keypaths from the root of the whole tree
            instead of from the selected subtree being searched.
          innermost: Select the deepest accepted subtrees instead of the outermost.

        Returns:
          A selection of the accepted subtrees.

        Raises:
          TypeError: If the predicate returns something other than a bool.

        Example:
          >>> from saikei import sk
          >>> sel = sk.select({"small": [1, 2], "big": [100]})
          >>> sel.at_subtrees_where(lambda x: isinstance(x, int) and x > 10).get_sequence()
          (100,)
        """
        what = "at_subtrees_where"
        if not with_keypath:
            finder = Finder(lambda x: check_bool(filter_fn(x), what), innermost=innermost)
            return self._refine(lambda path, value: search(value, path, finder))

        def per_node(path: KeyPath, value: Any) -> tuple[list, Any]:
            if absolute_keypath:
                match = lambda p, x: check_bool(filter_fn(path + p, x), what)  # noqa: E731
            else:
                match = lambda p, x: check_bool(filter_fn(p, x), what)  # noqa: E731
            finder = Finder(match, takes_path=True, innermost=innermost)
            return search(value, path, finder)

        return self._refine(per_node)

    def at_equal_to(self, template: Any) -> Selection:
        """Selects the subtrees equal to `template` (compared with `template == subtree`).

        Arrays in the tree are never compared (their `==` is elementwise).

        Args:
          template: The value to look for; it may not be an array.

        Returns:
          A selection of the equal subtrees (outermost first).

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": [1, 2, 3], "b": [1, 2, 3], "c": 1}).at_equal_to([1, 2, 3]).count()
          2
        """
        # NamedArrays count as arrays: their `==` is elementwise too.
        arrays = (jax.Array, np.ndarray, NamedArray)
        if isinstance(template, arrays):
            raise ValueError(
                f"at_equal_to cannot look for an array ({type(template).__name__}): `==`"
                " on arrays compares elementwise. Use .at_subtrees_where(lambda x: ...)"
                " with your own comparison (e.g. np.array_equal) instead."
            )

        def match(x: Any) -> bool:
            if isinstance(x, arrays):
                return False
            try:
                result = template == x
            except Exception as error:
                raise ValueError(
                    f"at_equal_to could not compare {short_repr(template)} with the"
                    f" subtree {short_repr(x)}: {type(error).__name__}: {error}. Use"
                    " .at_subtrees_where with a comparison that handles your values."
                ) from error
            if result is True or result is False:
                return result
            if isinstance(result, np.bool_):
                return bool(result)
            # A type whose == is elementwise (e.g. a named array) never matches.
            return False

        finder = Finder(match)
        return self._refine(lambda path, value: search(value, path, finder))

    def at_keypaths(self, keypaths: Iterable[KeyPath]) -> Selection:
        """Selects subtrees by keypath, relative to each selected subtree.

        If one keypath is a prefix of another, only the shorter one is selected
        (selections never nest).

        Args:
          keypaths: Keypaths such as `(jax.tree_util.DictKey("a"),)`.

        Returns:
          A selection of the subtrees at those keypaths.

        Raises:
          KeyError: If a keypath exists in none of the selected subtrees.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> path = (jax.tree_util.DictKey("a"), jax.tree_util.SequenceKey(1))
          >>> sk.select({"a": [1, 2]}).at_keypaths([path]).get()
          2
        """
        return self._at_keypaths(keypaths, "at_keypaths")[0]

    def _at_keypaths(
        self, keypaths: Iterable[KeyPath], what: str
    ) -> tuple[Selection, dict[KeyPath, KeyPath]]:
        """`at_keypaths`, also returning each new selected keypath's relative keypath."""
        wanted = [tuple(k) for k in keypaths]
        finder = keypath_finder(wanted)
        relative: dict[KeyPath, KeyPath] = {}

        def per_node(path: KeyPath, value: Any) -> tuple[list, Any]:
            found, rest = search(value, path, finder)
            for p, _ in found:
                relative[p] = p[len(path) :]
            return found, rest

        result = self._refine(per_node)
        if self.selected_by_path:
            found_relative = set(relative.values())
            for keypath in wanted:
                if not any(keypath[:i] in found_relative for i in range(len(keypath) + 1)):
                    raise KeyError(
                        f"{what}: no selected subtree has the keypath"
                        f" {jax.tree_util.keystr(keypath) or '()'}. Keypaths are relative to"
                        " each selected subtree; list existing ones with"
                        " jax.tree_util.tree_flatten_with_path."
                    )
        return result, relative

    def at_children(self) -> Selection:
        """Selects the direct pytree children of each selected subtree.

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": [1, 2], "b": 3}).at_children().get_sequence()
          ([1, 2], 3)
        """
        finder = Finder(lambda p, x: len(p) == 1, takes_path=True)
        return self._refine(lambda path, value: search(value, path, finder))

    def at_pytree_leaves(self) -> Selection:
        """Selects every pytree leaf (empty nodes such as `None` or `()` are not leaves).

        Example:
          >>> from saikei import sk
          >>> sk.select([1, (), [2, None]]).at_pytree_leaves().get_sequence()
          (1, 2)
        """
        finder = Finder(None, leaves_too=True)
        return self._refine(lambda path, value: search(value, path, finder))

    def at_childless(self) -> Selection:
        """Selects every subtree without children: leaves and empty nodes like `None`, `()`.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, (), [2, None]]).at_childless().get_sequence()
          (1, (), 2, None)
        """
        finder = childless_finder()
        return self._refine(lambda path, value: search(value, path, finder))

    # ------------------------------------------------------------------- filter

    def _keep(self, keep: list[bool]) -> Selection:
        """Keeps the selected entries flagged True; the others return to the remainder."""
        if all(keep):
            return self
        kept = collections.OrderedDict()
        keys = []
        replacements = []
        dropped = []
        for (path, value), flag in zip(self.selected_by_path.items(), keep):
            keys.append(path)
            if flag:
                kept[path] = value
                replacements.append(make_hole(path))
            else:
                dropped.append(len(replacements))
                replacements.append(value)
        # Values going back into the remainder must have their own holes and
        # quotes escaped; one flatten tells whether any of them has some.
        if contains_quotable([replacements[i] for i in dropped]):
            for i in dropped:
                replacements[i] = quote_for_remainder(replacements[i], keys[i])
        remainder = fill_values(self.remainder, keys, replacements, unquote=False)
        return _make_selection(kept, remainder)

    def where(self, filter_fn: Callable[..., bool], *, with_keypath: bool = False) -> Selection:
        """Keeps only the selected subtrees for which a predicate returns True.

        Args:
          filter_fn: `fn(subtree) -> bool`, or `fn(keypath, subtree) -> bool` if
            `with_keypath` (keypaths from the root of the tree).
          with_keypath: Pass the keypath as the first argument.

        Returns:
          The narrowed selection.

        Raises:
          TypeError: If the predicate returns something other than a bool.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2, 3, 4]).at_pytree_leaves().where(lambda x: x % 2 == 0).set(0)
          [1, 0, 3, 0]
        """
        if with_keypath:
            keep = [check_bool(filter_fn(p, v), "where") for p, v in self.selected_by_path.items()]
        else:
            keep = [check_bool(filter_fn(v), "where") for v in self.selected_by_path.values()]
        return self._keep(keep)

    def pick_nth_selected(self, n: int | Sequence[int]) -> Selection:
        """Keeps only the n-th selected subtree(s), counting in tree order.

        Args:
          n: An index or a sequence of indices; negative indices count from the end.

        Returns:
          The narrowed selection.

        Raises:
          IndexError: If an index is out of range.

        Example:
          >>> from saikei import sk
          >>> sk.select([1, 2, 3]).at_pytree_leaves().pick_nth_selected(-1).set(0)
          [1, 2, 0]
        """
        indices = [n] if isinstance(n, int | np.integer) else list(n)
        count = len(self.selected_by_path)
        keep = [False] * count
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int | np.integer):
                raise TypeError(
                    f"pick_nth_selected takes integer indices, got {short_repr(index)}."
                )
            if not -count <= index < count:
                raise IndexError(
                    f"pick_nth_selected({index}): the selection has only {count} selected"
                    " subtree(s)."
                )
            keep[operator.index(index)] = True
        return self._keep(keep)

    def invert(self) -> Selection:
        """Selects everything that is not selected: the largest subtrees with no selected part.

        Example:
          >>> from saikei import sk
          >>> sk.select({"a": 1, "b": [2, 3]}).at(lambda t: t["b"][0]).invert().get_sequence()
          (1, 3)
        """
        items = list(self.selected_by_path.items())
        lookup = HoleLookup([p for p, _ in items])
        ancestors = {path[:i] for path, _ in items for i in range(len(path))}
        found: list[tuple[KeyPath, Any]] = []

        def walk(node: Any, path: KeyPath) -> Any:
            if type(node) is SelectionHole:
                old_path, value = items[lookup.position(node)]
                return quote_for_remainder(value, old_path)
            if path not in ancestors:
                value = fill_holes(node, _no_hole, unquote=True)
                found.append((path, value))
                return make_hole(path)
            if type(node) is SelectionQuote:
                inner = node.quoted
                if type(inner) is not SelectionQuote:
                    raise ValueError("Malformed selection remainder around a SelectionQuote.")
                ((key, child),) = one_level(inner)[0]
                return make_quote(make_quote(walk(child, (*path, key))))
            level = one_level(node)
            if level is None:
                raise ValueError(
                    f"Malformed selection: the remainder has a leaf at {jax.tree_util.keystr(path)}"
                    " where a selected subtree should be."
                )
            children, treedef = level
            return unflatten_checked(
                treedef, [walk(child, (*path, key)) for key, child in children]
            )

        remainder = walk(self.remainder, ())
        lookup.check_all_used()
        return _make_selection(collections.OrderedDict(found), remainder)

    def refine(self, selector_fn: Callable[[Any], Selection]) -> Selection:
        """Selects inside each selected subtree with a function that returns a Selection.

        Unlike chained calls, which treat every selected subtree alike, the
        function can choose differently for each subtree.

        Args:
          selector_fn: Maps a selected subtree `s` to a selection within it,
            usually built with `sk.select(s)...`.

        Returns:
          A selection, in the whole tree, of everything the function selected.

        Example:
          >>> from saikei import sk
          >>> tree = [{"keep": 1, "drop": 2}, [3, 4]]
          >>> sk.select(tree).at_children().refine(
          ...     lambda s: sk.select(s).at(lambda d: d["keep"]) if isinstance(s, dict)
          ...     else sk.select(s).at(lambda l: l[0])
          ... ).set(0)
          [{'drop': 2, 'keep': 0}, [0, 4]]
        """

        def make_inner(path: KeyPath, value: Any) -> Selection:
            inner = selector_fn(value)
            if not isinstance(inner, Selection):
                raise TypeError(
                    f"refine: the selector function returned {short_repr(inner)} for the"
                    f" subtree at {jax.tree_util.keystr(path) or 'the root'}, but it must"
                    " return a Selection, e.g. `lambda s: sk.select(s).at(...)`."
                )
            return inner

        return self._merge_inner(make_inner)

    def flatten_selected_selections(self) -> Selection:
        """Merges a selection whose selected values are Selections into one selection.

        Each selected value must be a Selection of the subtree that was there;
        the result selects, in the whole tree, everything those inner
        selections select. `sel.apply(f, keep_selected=True)` with an `f`
        returning Selections builds such a selection.

        Example:
          >>> from saikei import sk
          >>> sel = sk.select([[1, 2], [3]]).at_children()
          >>> inner = sel.apply(lambda s: sk.select(s).at(lambda l: l[0]), keep_selected=True)
          >>> inner.flatten_selected_selections().set(0)
          [[0, 2], [0]]
        """

        def make_inner(path: KeyPath, value: Any) -> Selection:
            if not isinstance(value, Selection):
                raise TypeError(
                    "flatten_selected_selections needs every selected value to be a"
                    f" Selection, but the one at {jax.tree_util.keystr(path) or 'the root'} is"
                    f" {short_repr(value)}."
                )
            return value

        return self._merge_inner(make_inner)

    def _merge_inner(self, make_inner: Callable[[KeyPath, Any], Selection]) -> Selection:
        def per_node(path: KeyPath, value: Any) -> tuple[list, Any]:
            inner = make_inner(path, value)
            if not path:
                return list(inner.selected_by_path.items()), inner.remainder
            # The inner keypaths are relative to `value`; make them absolute.
            found = [(path + p, v) for p, v in inner.selected_by_path.items()]
            lookup = HoleLookup(list(inner.selected_by_path.keys()))

            def move(hole: SelectionHole) -> SelectionHole:
                return make_hole(found[lookup.position(hole)][0])

            rest = fill_holes(inner.remainder, move, unquote=False)
            lookup.check_all_used()
            return found, rest

        return self._refine(per_node)


def _no_hole(hole: SelectionHole) -> Any:
    raise ValueError(
        f"Malformed selection: found {hole!r} in a part of the remainder that no selected"
        " keypath leads to. Build selections with sk.select(...) rather than by hand."
    )
