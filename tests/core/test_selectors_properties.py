"""Property tests for selections on random nested trees, against independent oracles."""

import dataclasses
import itertools
from typing import Any

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

# At most 50 examples normally; the "thorough" hypothesis profile may ask for more.
SETTINGS = settings(max_examples=max(50, settings().max_examples), deadline=None)


@sk.pytree_dataclass
class Pair(sk.Struct):
    left: Any
    right: Any
    tag: str = dataclasses.field(default="p", metadata={"pytree_node": False})


_leaves = st.one_of(
    st.integers(-3, 3),
    st.none(),
    st.just(()),
    st.just("s"),
    st.integers(0, 3).map(lambda n: np.arange(n, dtype=np.float32)),
)


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from("abc"), children, max_size=3),
        st.builds(Pair, children, children, st.sampled_from(["p", "q"])),
    )


trees = st.recursive(_leaves, _extend, max_leaves=12)


def assert_same_tree(actual, expected):
    """Structure equality plus leaf equality (arrays compared by value and dtype)."""
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, b in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        else:
            assert type(a) is type(b) and a == b


def _children(node):
    """Children of the node types the strategy builds, written out by hand."""
    if isinstance(node, Pair):
        return [node.left, node.right]
    if isinstance(node, dict):
        return [node[k] for k in sorted(node)]
    if isinstance(node, list | tuple):
        return list(node)
    return []


def count_outermost(node, cls):
    if isinstance(node, cls):
        return 1
    return sum(count_outermost(c, cls) for c in _children(node))


def count_innermost(node, cls):
    below = sum(count_innermost(c, cls) for c in _children(node))
    if isinstance(node, cls) and below == 0:
        return 1
    return below


def count_childless(node):
    if node is None or isinstance(node, list | tuple | dict | Pair):
        children = _children(node)
        return 1 if not children else sum(count_childless(c) for c in children)
    return 1


SELECTORS = {
    "ints": lambda s: s.at_instances_of(int),
    "pairs": lambda s: s.at_instances_of(Pair),
    "innermost_pairs": lambda s: s.at_instances_of(Pair, innermost=True),
    "leaves": lambda s: s.at_pytree_leaves(),
    "childless": lambda s: s.at_childless(),
    "children": lambda s: s.at_children(),
    "lists": lambda s: s.at_subtrees_where(lambda x: isinstance(x, list)),
    "zeros": lambda s: s.at_equal_to(0),
    "deep": lambda s: s.at_subtrees_where(lambda p, x: len(p) == 2, with_keypath=True),
    "inverted_ints": lambda s: s.at_instances_of(int).invert(),
    "every_other_leaf": lambda s: s.at_pytree_leaves().where(lambda x: not isinstance(x, str)),
    "first_childless": lambda s: s.at_childless().pick_nth_selected([0, -1]),
    "refined": lambda s: s.at_children().refine(lambda c: sk.select(c).at_pytree_leaves()),
}
selector_names = st.sampled_from(sorted(SELECTORS))


@SETTINGS
@given(trees, selector_names)
def test_deselect_round_trips(tree, name):
    assert_same_tree(SELECTORS[name](sk.select(tree)).deselect(), tree)


@SETTINGS
@given(trees, selector_names, st.booleans())
def test_combine_of_partition_round_trips(tree, name, at_leaves):
    parts = SELECTORS[name](sk.select(tree)).partition(at_leaves=at_leaves)
    assert_same_tree(sk.combine(*parts), tree)


@SETTINGS
@given(trees, selector_names)
def test_selected_nodes_are_where_their_keypaths_say(tree, name):
    selection = SELECTORS[name](sk.select(tree))
    keypaths = selection.get_keypaths()
    for earlier, later in itertools.pairwise(keypaths):
        assert later[: len(earlier)] != earlier  # never nested
    for keypath, value in selection.selected_by_path.items():
        node = tree
        for key in keypath:
            node = _child_by_key(node, key)
        assert_same_tree(value, node)
        if not name.startswith("inverted"):
            # Searches hand out the original subtrees, not copies.
            assert value is node


def _child_by_key(node, key):
    if isinstance(key, jax.tree_util.DictKey):
        return node[key.key]
    if isinstance(key, jax.tree_util.SequenceKey):
        return node[key.idx]
    return getattr(node, key.name)


@SETTINGS
@given(trees)
def test_apply_on_leaves_agrees_with_tree_map_with_path(tree):
    def fn(path, leaf):
        return (jax.tree_util.keystr(path), leaf if isinstance(leaf, str) else str(leaf))

    expected = jax.tree_util.tree_map_with_path(fn, tree)
    actual = sk.select(tree).at_pytree_leaves().apply(fn, with_keypath=True)
    assert_same_tree(actual, expected)


@SETTINGS
@given(trees)
def test_apply_on_ints_agrees_with_tree_map(tree):
    expected = jax.tree_util.tree_map(lambda x: x * 10 if isinstance(x, int) else x, tree)
    assert_same_tree(sk.select(tree).at_instances_of(int).apply(lambda x: x * 10), expected)


@SETTINGS
@given(trees)
def test_keypaths_of_leaves_agree_with_jax(tree):
    expected = tuple(p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0])
    assert sk.select(tree).at_pytree_leaves().get_keypaths() == expected


@SETTINGS
@given(trees)
def test_instance_counts_agree_with_a_manual_walk(tree):
    root = sk.select(tree)
    assert root.at_instances_of(Pair).count() == count_outermost(tree, Pair)
    assert root.at_instances_of(Pair, innermost=True).count() == count_innermost(tree, Pair)
    assert root.at_instances_of(list | tuple).count() == count_outermost(tree, list | tuple)
    assert root.at_childless().count() == count_childless(tree)


def _drop_ints_from_sequences(node):
    if isinstance(node, Pair):
        left = _drop_ints_from_sequences(node.left)
        return Pair(left, _drop_ints_from_sequences(node.right), node.tag)
    if isinstance(node, dict):
        return {k: _drop_ints_from_sequences(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        kept = [_drop_ints_from_sequences(c) for c in node if not isinstance(c, int)]
        return type(node)(kept)
    return node


@SETTINGS
@given(trees)
def test_remove_from_parent_agrees_with_a_manual_rebuild(tree):
    selection = sk.select(tree).at_subtrees_where(
        lambda p, x: (
            isinstance(x, int) and bool(p) and isinstance(p[-1], jax.tree_util.SequenceKey)
        ),
        with_keypath=True,
    )
    assert_same_tree(selection.remove_from_parent(), _drop_ints_from_sequences(tree))


@SETTINGS
@given(trees, selector_names, selector_names)
def test_selections_of_selections_round_trip(tree, inner_name, outer_name):
    inner = SELECTORS[inner_name](sk.select(tree))
    outer = SELECTORS[outer_name](sk.select(inner))
    rebuilt = outer.deselect()
    assert_same_tree(rebuilt, inner)
    assert_same_tree(rebuilt.deselect(), tree)
    assert_same_tree(sk.combine(*outer.partition()).deselect(), tree)


@SETTINGS
@given(trees, selector_names)
def test_invert_twice_selects_the_same_nodes_or_fewer_larger_ones(tree, name):
    selection = SELECTORS[name](sk.select(tree))
    inverted = selection.invert()
    assert_same_tree(inverted.deselect(), tree)
    # Every leaf is inside exactly one of the two selections.
    paths = selection.get_keypaths() + inverted.get_keypaths()
    for leaf_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        owners = [p for p in paths if leaf_path[: len(p)] == p]
        assert len(owners) == 1
