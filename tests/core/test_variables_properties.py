"""Property tests: unbind then bind gives back the same tree."""

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk


@sk.pytree_dataclass
class _Pair(sk.Struct):
    left: object
    right: object


# A tree is described by nested ("list" | "tuple" | "dict" | "pair", children)
# tuples whose leaves are ("var", index into a pool), ("number", float) or
# ("none",). Variables are built per example from the pool description, so a
# pool index used twice is one shared variable object.
_leaf = st.one_of(
    st.tuples(st.just("var"), st.integers(0, 5)),
    st.tuples(st.just("number"), st.floats(-10, 10, allow_nan=False)),
    st.tuples(st.just("none")),
)


def _node(children):
    return st.one_of(
        st.tuples(st.just("list"), st.lists(children, max_size=3)),
        st.tuples(st.just("tuple"), st.lists(children, max_size=3)),
        st.tuples(
            st.just("dict"),
            st.dictionaries(st.text("abc", min_size=1, max_size=2), children, max_size=3),
        ),
        st.tuples(st.just("pair"), st.tuples(children, children)),
    )


_description = st.recursive(_leaf, _node, max_leaves=12)
# For each pool index: is it a Parameter (else a StateVariable), and its value.
_pool = st.lists(
    st.tuples(st.booleans(), st.floats(-5, 5, allow_nan=False)), min_size=6, max_size=6
)


def _make_pool(pool_description):
    return [
        sk.Parameter(label=f"v{i}", value=np.float32(x))
        if is_param
        else sk.StateVariable(np.float32(x), label=f"v{i}")
        for i, (is_param, x) in enumerate(pool_description)
    ]


def _build(description, pool):
    kind = description[0]
    if kind == "var":
        return pool[description[1]]
    if kind == "number":
        return description[1]
    if kind == "none":
        return None
    children = description[1]
    if kind == "list":
        return [_build(c, pool) for c in children]
    if kind == "tuple":
        return tuple(_build(c, pool) for c in children)
    if kind == "dict":
        return {k: _build(c, pool) for k, c in children.items()}
    return _Pair(_build(children[0], pool), _build(children[1], pool))


def _is_variable(x):
    return isinstance(x, sk.AbstractVariable)


@settings(max_examples=50, deadline=None)
@given(_description, _pool)
def test_bind_of_unbind_gives_same_tree_and_objects(description, pool_description):
    tree = _build(description, _make_pool(pool_description))
    rebound = sk.bind_variables(*sk.unbind_variables(tree))
    original_leaves, original_def = jax.tree_util.tree_flatten(tree)
    new_leaves, new_def = jax.tree_util.tree_flatten(rebound)
    assert new_def == original_def
    assert len(new_leaves) == len(original_leaves)
    for old, new in zip(original_leaves, new_leaves):
        if _is_variable(old):
            assert new is old
        else:
            assert new == old


@settings(max_examples=50, deadline=None)
@given(_description, _pool)
def test_unbind_returns_each_distinct_variable_once_in_order(description, pool_description):
    tree = _build(description, _make_pool(pool_description))
    _, variables = sk.unbind_variables(tree)
    expected = []
    for leaf in jax.tree_util.tree_leaves(tree):
        if _is_variable(leaf) and not any(leaf is seen for seen in expected):
            expected.append(leaf)
    assert len(variables) == len(expected)
    assert all(a is b for a, b in zip(variables, expected))


@settings(max_examples=50, deadline=None)
@given(_description, _pool)
def test_bind_of_frozen_unbind_gives_equal_values(description, pool_description):
    tree = _build(description, _make_pool(pool_description))
    slots, frozen = sk.unbind_variables(tree, freeze=True)
    rebound = sk.bind_variables(slots, frozen, unfreeze_as_copy=True)
    is_var = _is_variable
    original_leaves, original_def = jax.tree_util.tree_flatten(tree)
    new_leaves, new_def = jax.tree_util.tree_flatten(rebound)
    assert new_def == original_def
    for old, new in zip(original_leaves, new_leaves):
        if is_var(old):
            assert type(new) is type(old) and new is not old
            assert new.label == old.label
            np.testing.assert_array_equal(np.asarray(new.value), np.asarray(old.value))
        else:
            assert new == old


@settings(max_examples=50, deadline=None)
@given(_description, _pool)
def test_sharing_survives_unfreeze_as_copy(description, pool_description):
    tree = _build(description, _make_pool(pool_description))
    slots, frozen = sk.unbind_variables(tree, freeze=True)
    rebound = sk.bind_variables(slots, frozen, unfreeze_as_copy=True)
    # Two leaves hold the same object after the round trip exactly when they did before.
    old = [leaf for leaf in jax.tree_util.tree_leaves(tree) if _is_variable(leaf)]
    new = [leaf for leaf in jax.tree_util.tree_leaves(rebound) if _is_variable(leaf)]
    for i in range(len(old)):
        for j in range(len(old)):
            assert (old[i] is old[j]) == (new[i] is new[j])
