"""Tests for NotInThisPartition and combine."""

from typing import Any

import jax
import jax.numpy as jnp
import pytest

from saikei import sk

NIP = sk.NotInThisPartition


def test_not_in_this_partition_is_childless_and_comparable():
    assert jax.tree_util.tree_leaves([NIP(), NIP()]) == []
    assert NIP() == NIP()


def test_combine_same_structure_partitions():
    assert sk.combine([1, NIP(), 3], [NIP(), 2, NIP()]) == [1, 2, 3]


def test_combine_where_a_sentinel_replaces_a_whole_subtree():
    left = {"a": [1, 2], "b": NIP()}
    right = {"a": NIP(), "b": {"c": 3}}
    assert sk.combine(left, right) == {"a": [1, 2], "b": {"c": 3}}


def test_combine_mixed_depths():
    left = {"a": [1, NIP()], "b": NIP()}
    right = {"a": [NIP(), 2], "b": (3,)}
    assert sk.combine(left, right) == {"a": [1, 2], "b": (3,)}


def test_combine_three_way_split():
    tree = {"w": 1.0, "b": 2.0, "name": "x"}
    w_part, rest = sk.select(tree).at(lambda t: t["w"]).partition()
    b_part, rest = sk.select(rest).at(lambda t: t["b"]).partition()
    assert sk.combine(w_part, b_part, rest) == tree
    partial = sk.combine(w_part, b_part)
    assert partial == {"w": 1.0, "b": 2.0, "name": NIP()}


def test_combine_keeps_sentinels_missing_everywhere():
    assert sk.combine([1, NIP()], [NIP(), NIP()]) == [1, NIP()]


def test_combine_keeps_empty_nodes_shared_by_partitions():
    assert sk.combine([1, None, ()], [NIP(), None, ()]) == [1, None, ()]


def test_combine_one_partition_is_identity():
    tree = {"a": 1}
    assert sk.combine(tree) is tree


def test_combine_needs_a_partition():
    with pytest.raises(TypeError, match="at least one"):
        sk.combine()


def test_combine_rejects_a_leaf_in_two_partitions():
    with pytest.raises(ValueError, match=r"partitions 0 and 1 both hold a value at \[1\]"):
        sk.combine([NIP(), 1], [NIP(), 2])


def test_combine_rejects_a_leaf_in_two_partitions_with_different_structures():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        items: Any

    left = Box([1, NIP()])
    right = Box([2, NIP(), NIP()])
    with pytest.raises(ValueError, match=r"disagree on the structure at Box\.items"):
        sk.combine(left, right)
    with pytest.raises(ValueError, match=r"both hold a value at Box\.items\[0\]"):
        sk.combine(Box([1, {"k": NIP()}]), Box([5, NIP()]))


def test_combine_rejects_mismatched_dict_keys():
    with pytest.raises(ValueError, match="disagree on the structure at the root"):
        sk.combine({"a": 1, "b": NIP()}, {"a": NIP(), "c": NIP()})


def test_partitions_pass_through_jit():
    tree = {"w": jnp.ones(2), "n": jnp.zeros(3)}
    params, rest = sk.select(tree).at(lambda t: t["w"]).partition()

    @jax.jit
    def step(params, rest):
        full = sk.combine(params, rest)
        return full["w"].sum() + full["n"].sum()

    assert float(step(params, rest)) == 2.0


# ---------------------------------------------------------- Selection.partition


def test_partition_then_tree_map_then_combine():
    tree = {"w": [1.0, 2.0], "name": "layer", "b": 3.0}
    selected, rest = sk.select(tree).at(lambda t: t["w"]).partition()
    assert rest == {"w": NIP(), "name": "layer", "b": 3.0}
    assert selected == {
        "w": [1.0, 2.0],
        "name": NIP(),
        "b": NIP(),
    }
    doubled = jax.tree_util.tree_map(lambda x: x * 2, selected)
    assert sk.combine(doubled, rest) == {"w": [2.0, 4.0], "name": "layer", "b": 3.0}


def test_partition_at_leaves_keeps_the_structure():
    tree = {"w": [1.0, None], "b": 3.0}
    selected, rest = sk.select(tree).at(lambda t: t["w"]).partition(at_leaves=True)
    assert rest == {"w": [NIP(), None], "b": 3.0}
    structure = jax.tree_util.tree_structure
    is_nip = lambda x: isinstance(x, sk.NotInThisPartition)  # noqa: E731
    assert structure(selected, is_leaf=is_nip) == structure(rest, is_leaf=is_nip)
    assert sk.combine(selected, rest) == tree


def test_partition_keeps_empty_nodes_in_the_remainder_only():
    # As in penzai: an empty node holds nothing selected, so the selected part
    # has a placeholder there (unless split at leaves).
    tree = [1, (), None, "x"]
    selected, rest = sk.select(tree).at_instances_of(int).partition()
    assert selected == [1, NIP(), NIP(), NIP()]
    assert rest == [NIP(), (), None, "x"]
    assert sk.combine(selected, rest) == tree
    selected, rest = sk.select(tree).at_instances_of(int).partition(at_leaves=True)
    assert selected == [1, (), None, NIP()]


def test_partition_for_jax_grad_argnums():
    tree = {"w": jnp.array(2.0), "x": jnp.array(5.0)}
    params, rest = sk.select(tree).at(lambda t: t["w"]).partition()

    def loss(params, rest):
        full = sk.combine(params, rest)
        return full["w"] * full["x"]

    grads = jax.grad(loss)(params, rest)
    assert float(grads["w"]) == 5.0
    assert grads["x"] == NIP()


# --- penzai's placement of NotInThisPartition (issue 14) -------------------

_NIP = sk.NotInThisPartition()


def test_partition_puts_one_placeholder_at_the_top_of_each_unselected_branch():
    tree = {"a": [1, 2, {"x": 3}], "b": (4, 5), "c": 6}
    selected, rest = sk.select(tree).at_instances_of(int).where(lambda v: v in (2, 6)).partition()
    assert selected == {"a": [_NIP, 2, _NIP], "b": _NIP, "c": 6}
    assert rest == {"a": [1, _NIP, {"x": 3}], "b": (4, 5), "c": _NIP}
    assert sk.combine(selected, rest) == tree


def test_partition_replaces_empty_unselected_containers():
    selected, rest = sk.select([1, [], 3]).at_instances_of(int).partition()
    assert selected == [1, _NIP, 3]
    assert rest == [_NIP, [], _NIP]
    assert sk.combine(selected, rest) == [1, [], 3]


def test_partition_keeps_a_selected_subtree_whole():
    tree = {"a": [1, 2, {"x": 3}], "b": (4, 5), "c": 6}
    selected, rest = sk.select(tree).at(lambda t: t["a"]).partition()
    assert selected == {"a": [1, 2, {"x": 3}], "b": _NIP, "c": _NIP}
    assert rest == {"a": _NIP, "b": (4, 5), "c": 6}


def test_partition_at_leaves_keeps_the_whole_structure_in_both_parts():
    tree = {"a": [1, 2, {"x": 3}], "b": (4, 5), "c": 6}
    selected, rest = sk.select(tree).at(lambda t: t["a"][2]).partition(at_leaves=True)
    assert selected == {"a": [_NIP, _NIP, {"x": 3}], "b": (_NIP, _NIP), "c": _NIP}
    assert rest == {"a": [1, 2, {"x": _NIP}], "b": (4, 5), "c": 6}
    assert sk.combine(selected, rest) == tree


def test_partition_with_nothing_selected_is_a_single_placeholder():
    selected, rest = sk.select({"a": [1, 2]}).at_instances_of(str).partition()
    assert selected == _NIP
    assert rest == {"a": [1, 2]}
