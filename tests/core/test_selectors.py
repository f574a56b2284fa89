"""Unit tests for selections (sk.select and Selection)."""

import collections
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.core import CustomGetAttrKey, SelectionHole, SelectionQuote

DictKey = jax.tree_util.DictKey
SequenceKey = jax.tree_util.SequenceKey
GetAttrKey = jax.tree_util.GetAttrKey


def _assert_same_tree(actual, expected):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, b in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        if isinstance(b, np.ndarray | jax.Array):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


# --------------------------------------------------------------------- select


def test_select_selects_the_root():
    tree = {"a": [1, 2]}
    selection = sk.select(tree)
    assert selection.get_keypaths() == ((),)
    assert selection.get() is tree
    assert selection.remainder == SelectionHole(())


def test_selection_is_a_pytree_struct():
    selection = sk.select({"a": 1, "b": "x"}).at_instances_of(int)
    leaves, treedef = jax.tree_util.tree_flatten(selection)
    assert leaves == [1, "x"]
    assert treedef.unflatten(leaves) == selection


def test_struct_select_method_starts_a_selection():
    @sk.pytree_dataclass
    class MyStruct(sk.Struct):
        value: int

    assert MyStruct(4).select().at(lambda s: s.value).set(5) == MyStruct(5)


def test_deselect_without_changes_gives_an_equal_tree():
    tree = {"a": [1, (2, None)], "b": np.arange(3)}
    _assert_same_tree(sk.select(tree).at_pytree_leaves().deselect(), tree)


# ------------------------------------------------------------------------- at


def test_at_selects_a_nested_node():
    @sk.pytree_dataclass
    class Foo(sk.Struct):
        bar: list

    obj = Foo(bar=[1, 2, {"baz": 5}])
    selection = sk.select(obj).at(lambda x: x.bar[2]["baz"])
    assert selection.get() == 5
    assert selection.get_keypaths() == ((GetAttrKey("bar"), SequenceKey(2), DictKey("baz")),)


def test_at_selects_an_empty_node():
    tree = [1, (), None]
    assert sk.select(tree).at(lambda t: t[1]).get_keypaths() == ((SequenceKey(1),),)
    assert sk.select(tree).at(lambda t: t[2]).get_keypaths() == ((SequenceKey(2),),)


def test_at_selects_a_leaf_even_if_equal_leaves_exist_elsewhere():
    tree = [7, 7, 7]
    assert sk.select(tree).at(lambda t: t[1]).set(0) == [7, 0, 7]


def test_at_returning_a_list_node_selects_the_list_itself():
    tree = {"xs": [1, 2]}
    assert sk.select(tree).at(lambda t: t["xs"]).get() == [1, 2]


def test_at_multiple_selects_each_element():
    tree = {"xs": [1, 2], "y": 3}
    selection = sk.select(tree).at(lambda t: t["xs"], multiple=True)
    assert selection.get_sequence() == (1, 2)


def test_at_multiple_with_a_tuple_of_nodes():
    tree = {"a": 1, "b": 2, "c": 3}
    selection = sk.select(tree).at(lambda t: (t["c"], t["a"]), multiple=True)
    # Selected nodes are always kept in tree order.
    assert selection.get_sequence() == (1, 3)


def test_at_default_selects_each_element_of_a_new_tuple():
    tree = {"a": 1, "b": 2}
    assert sk.select(tree).at(lambda t: (t["a"], t["b"])).count() == 2


def test_at_multiple_false_refuses_a_new_tuple():
    with pytest.raises(ValueError, match="not a node of the selected subtree"):
        sk.select({"a": 1}).at(lambda t: (t["a"],), multiple=False)


def test_at_dedupes_repeated_nodes():
    tree = {"a": [1]}
    assert sk.select(tree).at(lambda t: (t["a"], t["a"]), multiple=True).count() == 1


def test_at_chained_on_a_multi_selection():
    @sk.pytree_dataclass
    class Pair(sk.Struct):
        left: Any
        right: Any

    tree = [Pair(1, 2), Pair(3, 4)]
    selection = sk.select(tree).at_instances_of(Pair).at(lambda p: p.right)
    assert selection.apply(lambda x: -x) == [Pair(1, -2), Pair(3, -4)]


def test_at_then_at_instances_of_array_like():
    obj = {"a": 1, "c": {"d": np.float32(2), "e": "text", "f": jnp.ones(2)}}
    result = (
        sk.select(obj)
        .at(lambda r: r["c"])
        .at_instances_of(jax.typing.ArrayLike)
        .apply(lambda v: v + 100)
    )
    assert result["a"] == 1
    assert result["c"]["d"] == 102
    assert result["c"]["e"] == "text"
    np.testing.assert_array_equal(result["c"]["f"], [101, 101])


def test_at_rejects_a_new_object():
    with pytest.raises(ValueError, match="not a node"):
        sk.select([1, 2]).at(lambda t: 7)


def test_at_rejects_a_slice_with_multiple_false():
    with pytest.raises(ValueError, match="slice"):
        sk.select([1, 2, 3]).at(lambda t: t[1:], multiple=False)


def test_at_rejects_a_static_field():
    @sk.pytree_dataclass
    class Named(sk.Struct):
        value: int
        name: str = dataclasses.field(metadata={"pytree_node": False})

    with pytest.raises(ValueError, match="static field"):
        sk.select(Named(1, "n")).at(lambda s: s.name)


def test_at_rejects_overlapping_nodes():
    with pytest.raises(ValueError, match="overlap"):
        sk.select({"a": [1]}).at(lambda t: (t["a"], t["a"][0]), multiple=True)


def test_at_multiple_true_needs_a_sequence():
    with pytest.raises(TypeError, match="list or tuple"):
        sk.select({"a": 1}).at(lambda t: t["a"], multiple=True)


def test_at_explains_accessor_errors():
    with pytest.raises(KeyError) as info:
        sk.select({"a": 1}).at(lambda t: t["missing"])
    assert any("accessor given to Selection.at" in note for note in info.value.__notes__)


def test_at_refuses_an_ambiguous_node():
    class Const:
        pass

    shared = Const()
    jax.tree_util.register_pytree_node(Const, lambda c: ((0,), None), lambda aux, kids: shared)
    with pytest.raises(ValueError, match="several places"):
        sk.select([Const(), Const()]).at(lambda t: t[0])


# -------------------------------------------------------------- at_instances_of


def test_at_instances_of_selects_outermost():
    tree = [1, [2, {"k": 3}], "x"]
    assert sk.select(tree).at_instances_of(list).get_keypaths() == ((),)
    assert sk.select(tree).at_instances_of(int).get_sequence() == (1, 2, 3)
    assert sk.select(tree).at_instances_of(dict).get_sequence() == ({"k": 3},)


def test_at_instances_of_innermost():
    tree = [[1, [2]], [3]]
    keypaths = sk.select(tree).at_instances_of(list, innermost=True).get_keypaths()
    assert keypaths == ((SequenceKey(0), SequenceKey(1)), (SequenceKey(1),))


def test_at_instances_of_union_and_tuple():
    tree = [1, "a", 2.5, None]
    assert sk.select(tree).at_instances_of(int | float).get_sequence() == (1, 2.5)
    assert sk.select(tree).at_instances_of((str, float)).get_sequence() == ("a", 2.5)


def test_at_instances_of_subclasses_and_none():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        x: int

    @sk.pytree_dataclass
    class Child(Base):
        x: int

    tree = [Base(1), Child(2), None]
    assert sk.select(tree).at_instances_of(Base).count() == 2
    assert sk.select(tree).at_instances_of(type(None)).get_keypaths() == ((SequenceKey(2),),)


def test_at_instances_of_rejects_non_types():
    with pytest.raises(TypeError, match="type"):
        sk.select([1]).at_instances_of("int")


# ------------------------------------------------------------ at_subtrees_where


def test_at_subtrees_where_small_arrays():
    tree = {"small": jnp.ones(3), "big": jnp.ones(100), "n": 4}
    selection = sk.select(tree).at_subtrees_where(
        lambda s: isinstance(s, jax.Array) and s.size <= 10
    )
    assert selection.get_keypaths() == ((DictKey("small"),),)


def test_at_subtrees_where_with_relative_keypath():
    tree = {"a": {"x": 1, "y": 2}}
    selection = (
        sk.select(tree)
        .at(lambda t: t["a"])
        .at_subtrees_where(lambda path, s: path == (DictKey("y"),), with_keypath=True)
    )
    assert selection.get_sequence() == (2,)


def test_at_subtrees_where_with_absolute_keypath():
    tree = {"a": {"x": 1, "y": 2}}
    seen = []

    def record(path, s):
        seen.append(path)
        return False

    sk.select(tree).at(lambda t: t["a"]).at_subtrees_where(
        record, with_keypath=True, absolute_keypath=True
    )
    assert (DictKey("a"), DictKey("x")) in seen


def test_at_subtrees_where_innermost():
    tree = {"a": {"b": {"c": 1}}}
    selection = sk.select(tree).at_subtrees_where(lambda s: isinstance(s, dict), innermost=True)
    assert selection.get() == {"c": 1}


def test_at_subtrees_where_accepts_numpy_bools():
    assert sk.select([1, 2]).at_subtrees_where(lambda s: np.bool_(s == 2)).get() == 2


def test_at_subtrees_where_requires_a_bool():
    with pytest.raises(TypeError, match="must return a Python bool"):
        sk.select([1, 2]).at_subtrees_where(lambda s: 1)


# ------------------------------------------------------------------ at_equal_to


def test_at_equal_to_values():
    tree = {"a": [1, 2, 3], "b": [1, 2, 3], "c": 1, "d": jnp.array(1)}
    assert sk.select(tree).at_equal_to(1).get_keypaths() == (
        (DictKey("a"), SequenceKey(0)),
        (DictKey("b"), SequenceKey(0)),
        (DictKey("c"),),
    )
    assert sk.select(tree).at_equal_to([1, 2, 3]).get_keypaths() == (
        (DictKey("a"),),
        (DictKey("b"),),
    )


def test_at_equal_to_rejects_array_templates():
    with pytest.raises(ValueError, match="array"):
        sk.select([1]).at_equal_to(np.array(1))


def test_at_equal_to_rejects_named_array_templates():
    # Regression: a NamedArray template used to select nothing, silently.
    tree = {"x": sk.nx.ones({"a": 2}), "y": 1}
    with pytest.raises(ValueError, match=r"array \(NamedArray\)"):
        sk.select(tree).at_equal_to(sk.nx.ones({"a": 2}))


def test_at_equal_to_never_compares_named_array_subtrees():
    tree = {"x": sk.nx.wrap(1), "y": 1}
    assert sk.select(tree).at_equal_to(1).get_keypaths() == ((DictKey("y"),),)


def test_at_equal_to_reports_failed_comparisons():
    class Picky:
        def __eq__(self, other):
            raise RuntimeError("cannot compare")

        __hash__ = object.__hash__

    with pytest.raises(ValueError, match="could not compare"):
        sk.select([1]).at_equal_to(Picky())


def test_at_equal_to_ignores_elementwise_comparisons():
    class Elementwise:
        def __eq__(self, other):
            return np.array([True, False])

        __hash__ = object.__hash__

    assert sk.select([1, 2]).at_equal_to(Elementwise()).is_empty()


# ------------------------------------------------------------------ at_keypaths


def test_at_keypaths_from_tree_map_with_path():
    tree = {"a": [1, 2], "b": 3}
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    selection = sk.select(tree).at_keypaths([paths[1], paths[2]])
    assert selection.get_sequence() == (2, 3)


def test_at_keypaths_keeps_only_the_shorter_of_nested_keypaths():
    tree = {"a": [1, 2]}
    selection = sk.select(tree).at_keypaths([(DictKey("a"),), (DictKey("a"), SequenceKey(0))])
    assert selection.get_sequence() == ([1, 2],)


def test_at_keypaths_are_relative_to_each_selected_node():
    tree = [{"w": 1, "b": 2}, {"w": 3, "b": 4}]
    selection = sk.select(tree).at_children().at_keypaths([(DictKey("w"),)])
    assert selection.get_sequence() == (1, 3)


def test_at_keypaths_rejects_missing_keypaths():
    with pytest.raises(KeyError, match="no selected subtree has the keypath"):
        sk.select({"a": 1}).at_keypaths([(DictKey("zz"),)])


# ------------------------------------------------- children, leaves, childless


def test_at_children():
    tree = {"a": [1, 2], "b": 3}
    assert sk.select(tree).at_children().get_sequence() == ([1, 2], 3)
    assert sk.select(5).at_children().is_empty()


def test_at_pytree_leaves_vs_at_childless():
    tree = [1, 2, (), 3, None, 4]
    assert sk.select(tree).at_pytree_leaves().get_sequence() == (1, 2, 3, 4)
    assert sk.select(tree).at_childless().get_sequence() == (1, 2, (), 3, None, 4)


def test_at_childless_selects_empty_containers_and_structs():
    @sk.pytree_dataclass
    class Empty(sk.Struct):
        pass

    tree = {"l": [], "d": {}, "e": Empty(), "x": 1}
    assert sk.select(tree).at_childless().count() == 4


# ------------------------------------------------------------------ filtering


def test_where_filters_selected_nodes():
    result = sk.select(list(range(6))).at_pytree_leaves().where(lambda x: x % 2 == 0)
    assert result.get_sequence() == (0, 2, 4)
    assert result.deselect() == list(range(6))


def test_where_with_keypath():
    tree = {"a": 1, "b": 2}
    selection = (
        sk.select(tree).at_children().where(lambda p, v: p == (DictKey("b"),), with_keypath=True)
    )
    assert selection.get() == 2


def test_where_requires_a_bool():
    with pytest.raises(TypeError, match="where must return a Python bool"):
        sk.select([1]).at_children().where(lambda x: x)


def test_pick_nth_selected():
    selection = sk.select(["a", "b", "c", "d"]).at_children()
    assert selection.pick_nth_selected(2).get() == "c"
    assert selection.pick_nth_selected(-1).get() == "d"
    assert selection.pick_nth_selected([0, 3]).get_sequence() == ("a", "d")


def test_pick_nth_selected_rejects_out_of_range():
    with pytest.raises(IndexError, match="only 2"):
        sk.select([1, 2]).at_children().pick_nth_selected(5)


def test_pick_nth_selected_rejects_non_integers():
    with pytest.raises(TypeError, match="integer"):
        sk.select([1, 2]).at_children().pick_nth_selected([True])


def test_invert_selects_the_largest_unselected_subtrees():
    tree = {"a": [1, 2, (), 3], "b": (5, 6), "c": True}
    inverted = sk.select(tree).at(lambda t: t["a"][2]).invert()
    assert inverted.get_sequence() == (1, 2, 3, (5, 6), True)
    assert inverted.deselect() == tree


def test_invert_of_the_root_and_of_nothing():
    tree = [1, 2]
    assert sk.select(tree).invert().is_empty()
    assert sk.select(tree).at_instances_of(str).invert().get() == tree


def test_refine_chooses_per_subtree():
    @sk.pytree_dataclass
    class Foo(sk.Struct):
        x: int
        y: int

    @sk.pytree_dataclass
    class Bar(sk.Struct):
        z: int
        w: int

    tree = [Foo(1, 2), Bar(3, 4)]

    def choose(node):
        if isinstance(node, Foo):
            return sk.select(node).at(lambda f: f.y)
        return sk.select(node).at(lambda b: b.z)

    selection = sk.select(tree).at_instances_of(Foo | Bar).refine(choose)
    assert selection.get_sequence() == (2, 3)
    assert selection.set(0) == [Foo(1, 0), Bar(0, 4)]


def test_refine_requires_a_selection():
    with pytest.raises(TypeError, match="must return a Selection"):
        sk.select([1]).at_children().refine(lambda s: s)


def test_flatten_selected_selections():
    selection = sk.select([[1, 2], [3]]).at_children()
    nested = selection.apply(lambda s: sk.select(s).at_children(), keep_selected=True)
    flat = nested.flatten_selected_selections()
    assert flat.get_sequence() == (1, 2, 3)
    assert flat.get_keypaths()[1] == (SequenceKey(0), SequenceKey(1))


def test_flatten_selected_selections_requires_selections():
    with pytest.raises(TypeError, match="needs every selected value to be a"):
        sk.select([1]).at_children().flatten_selected_selections()


# ------------------------------------------------------------------ inspecting


def test_count_len_and_is_empty():
    selection = sk.select([1, "a", 2]).at_instances_of(int)
    assert selection.count() == len(selection) == 2
    assert not selection.is_empty()
    assert sk.select([1]).at_instances_of(str).is_empty()


def test_assert_count_is_passes_through():
    result = sk.select({"a": 1, "b": 2}).at_children().assert_count_is(2).apply(lambda x: x * 2)
    assert result == {"a": 2, "b": 4}


def test_assert_count_is_reports_the_actual_count():
    with pytest.raises(AssertionError, match=r"Expected 3 .* but 2 are selected"):
        sk.select([1, 2]).at_children().assert_count_is(3)


def test_get_by_path_and_selected_by_path():
    selection = sk.select({"a": 1, "b": 2}).at_children()
    by_path = selection.get_by_path()
    assert isinstance(by_path, collections.OrderedDict)
    assert list(by_path.items()) == [((DictKey("a"),), 1), ((DictKey("b"),), 2)]
    assert by_path == selection.selected_by_path
    by_path[(DictKey("a"),)] = 100  # a copy: the selection is unchanged
    assert selection.selected_by_path[(DictKey("a"),)] == 1


def test_get_requires_exactly_one():
    with pytest.raises(ValueError, match="2 are selected"):
        sk.select([1, 2]).at_children().get()
    with pytest.raises(ValueError, match="0 are selected"):
        sk.select([1, 2]).at_instances_of(str).get()


# ------------------------------------------------------------------- modifying


def test_set_and_set_sequence():
    selection = sk.select([1, "a", 2]).at_instances_of(int)
    assert selection.set(0) == [0, "a", 0]
    assert selection.set_sequence(iter(["x", "y"])) == ["x", "a", "y"]


def test_set_sequence_requires_matching_length():
    with pytest.raises(ValueError, match="got 1 value"):
        sk.select([1, 2]).at_children().set_sequence([0])


def test_set_by_path_with_a_mapping_and_a_function():
    selection = sk.select({"a": 1, "b": 2}).at_children()
    assert selection.set_by_path({(DictKey("a"),): 10, (DictKey("b"),): 20}) == {"a": 10, "b": 20}
    assert selection.set_by_path(lambda p: jax.tree_util.keystr(p)) == {"a": "['a']", "b": "['b']"}


def test_set_by_path_rejects_missing_and_extra_keypaths():
    selection = sk.select({"a": 1, "b": 2}).at(lambda t: t["a"])
    with pytest.raises(KeyError, match="no value for"):
        selection.set_by_path({})
    with pytest.raises(KeyError, match="not selected"):
        selection.set_by_path({(DictKey("a"),): 0, (DictKey("b"),): 0})


def test_gradient_with_respect_to_a_subset():
    params = {"w": jnp.array(2.0), "b": jnp.array(1.0), "scale": jnp.array(3.0)}

    def loss(tree):
        return tree["w"] * tree["scale"] + tree["b"]

    selection = sk.select(params).at(lambda t: (t["w"], t["b"]), multiple=True)
    grads = jax.grad(lambda v: loss(selection.set_by_path(v)))(selection.get_by_path())
    assert float(grads[(DictKey("w"),)]) == 3.0
    assert float(grads[(DictKey("b"),)]) == 1.0

    root = sk.select(params)
    grads = jax.grad(lambda v: loss(root.select_and_set_by_path(v)))({(DictKey("w"),): params["w"]})
    assert float(grads[(DictKey("w"),)]) == 3.0


def test_select_and_set_by_path_relative_to_selected_nodes():
    tree = {"a": [1, 2], "b": [3, 4]}
    result = sk.select(tree).at_children().select_and_set_by_path({(SequenceKey(1),): 0})
    assert result == {"a": [1, 0], "b": [3, 0]}


def test_select_and_set_by_path_rejects_missing_keypaths():
    with pytest.raises(KeyError, match="select_and_set_by_path"):
        sk.select({"a": 1}).select_and_set_by_path({(DictKey("zz"),): 0})


def test_apply_with_keypath_and_keep_selected():
    selection = sk.select({"a": 1, "b": 2}).at_children()
    kept = selection.apply(
        lambda p, v: (jax.tree_util.keystr(p), v), with_keypath=True, keep_selected=True
    )
    assert isinstance(kept, sk.Selection)
    assert kept.get_sequence() == (("['a']", 1), ("['b']", 2))
    assert kept.deselect() == {"a": ("['a']", 1), "b": ("['b']", 2)}


def test_apply_with_selected_index():
    selection = sk.select(["a", "b", "c"]).at_children()
    assert selection.apply_with_selected_index(lambda i, v: v * i) == ["", "b", "cc"]
    kept = selection.apply_with_selected_index(lambda i, v: i, keep_selected=True)
    assert kept.get_sequence() == (0, 1, 2)


def test_apply_can_replace_with_any_subtree():
    tree = {"a": 1}
    assert sk.select(tree).at(lambda t: t["a"]).apply(lambda v: {"new": [v, v]}) == {
        "a": {"new": [1, 1]}
    }


# ---------------------------------------------------------------- list surgery


def test_insert_before_and_after_in_lists_inside_dicts():
    tree = {"xs": [1, 2, 3], "ys": (4, 5)}
    selection = sk.select(tree).at(lambda t: (t["xs"][1], t["ys"][0]), multiple=True)
    assert selection.insert_before(0) == {"xs": [1, 0, 2, 3], "ys": (0, 4, 5)}
    assert selection.insert_after(0) == {"xs": [1, 2, 0, 3], "ys": (4, 0, 5)}


def test_insert_after_several_elements_of_one_list():
    assert sk.select([1, 2, 3]).at_children().insert_after("x") == [1, "x", 2, "x", 3, "x"]


def test_insert_and_select():
    tree = {"xs": [1, 2]}
    inserted = (
        sk.select(tree).at(lambda t: t["xs"], multiple=True).insert_after("p", and_select=True)
    )
    assert inserted.get_keypaths() == (
        (DictKey("xs"), SequenceKey(1)),
        (DictKey("xs"), SequenceKey(3)),
    )
    assert inserted.set_sequence(["a", "b"]) == {"xs": [1, "a", 2, "b"]}
    before = sk.select(tree).at(lambda t: t["xs"][0]).insert_before("p", and_select=True)
    assert before.get_keypaths() == ((DictKey("xs"), SequenceKey(0)),)


def test_remove_from_parent():
    tree = {"xs": [1, "a", 2, "b"], "t": ("c", 3)}
    assert sk.select(tree).at_instances_of(str).remove_from_parent() == {"xs": [1, 2], "t": (3,)}


def test_apply_and_inline_flat_maps():
    tree = {"xs": [1, 2, 3]}
    result = (
        sk.select(tree).at(lambda t: t["xs"], multiple=True).apply_and_inline(lambda x: [x] * x)
    )
    assert result == {"xs": [1, 2, 2, 3, 3, 3]}


def test_apply_and_inline_with_keypath():
    result = (
        sk.select([1, 2])
        .at_children()
        .apply_and_inline(lambda p, x: [p[-1].idx, x], with_keypath=True)
    )
    assert result == [0, 1, 1, 2]


def test_apply_and_inline_in_nested_lists():
    tree = [[1, "a"], "b", [["c"]]]
    assert sk.select(tree).at_instances_of(str).remove_from_parent() == [[1], [[]]]


def test_apply_and_inline_requires_an_iterable():
    with pytest.raises(TypeError, match="must return an iterable"):
        sk.select([1]).at_children().apply_and_inline(lambda x: x)


def test_list_surgery_refuses_dict_entries():
    with pytest.raises(ValueError, match=r"parent of type dict.*\.set"):
        sk.select({"a": 1}).at(lambda t: t["a"]).remove_from_parent()


def test_list_surgery_on_a_struct_field_suggests_sequential():
    @sk.pytree_dataclass
    class Model(sk.Struct):
        layer: Any

    with pytest.raises(ValueError, match=r"sk\.nn\.Sequential"):
        sk.select(Model(1)).at(lambda m: m.layer).insert_after(2)


def test_list_surgery_refuses_the_root():
    with pytest.raises(ValueError, match="root of the tree is selected"):
        sk.select([1]).insert_after(2)


def test_list_surgery_refuses_namedtuples():
    class Point(NamedTuple):
        x: int
        y: int

    with pytest.raises(ValueError, match="parent of type Point"):
        sk.select(Point(1, 2)).at(lambda p: p.x).remove_from_parent()


def test_list_surgery_refuses_custom_sequences():
    class Box:
        def __init__(self, items):
            self.items = items

    jax.tree_util.register_pytree_with_keys(
        Box,
        lambda b: ([(SequenceKey(i), x) for i, x in enumerate(b.items)], None),
        lambda aux, items: Box(list(items)),
    )
    with pytest.raises(ValueError, match="parent of type Box"):
        sk.select(Box([1, 2])).at_children().remove_from_parent()


# -------------------------------------------------------------- any pytree


def test_works_on_namedtuples_none_and_arrays():
    class Point(NamedTuple):
        x: Any
        y: Any

    tree = {"p": Point(np.ones(2), None), "q": jnp.zeros(3)}
    result = sk.select(tree).at_instances_of(np.ndarray).apply(lambda a: a * 5)
    np.testing.assert_array_equal(result["p"].x, [5, 5])
    assert isinstance(result["p"], Point)
    assert result["p"].y is None


def test_works_on_structs_with_static_fields():
    @sk.pytree_dataclass
    class Named(sk.Struct):
        value: int
        name: str = dataclasses.field(metadata={"pytree_node": False})

    tree = [Named(1, "a"), Named(2, "b")]
    assert sk.select(tree).at_instances_of(int).apply(lambda v: v + 1) == [
        Named(2, "a"),
        Named(3, "b"),
    ]


def test_works_with_custom_keys():
    @sk.pytree_dataclass
    class Keyed(sk.Struct):
        body: Any

        def key_for_field(self, field_name):
            return CustomGetAttrKey(field_name)

    selection = sk.select(Keyed([1, 2])).at_pytree_leaves()
    assert selection.get_keypaths()[0] == (CustomGetAttrKey("body"), SequenceKey(0))
    assert selection.set(0) == Keyed([0, 0])


def test_works_on_custom_registered_pytrees():
    class Wrapper:
        def __init__(self, inner):
            self.inner = inner

        def __eq__(self, other):
            return isinstance(other, Wrapper) and self.inner == other.inner

        __hash__ = None

    jax.tree_util.register_pytree_node(
        Wrapper, lambda w: ((w.inner,), None), lambda _, c: Wrapper(c[0])
    )
    tree = [Wrapper(1), Wrapper([2])]
    assert sk.select(tree).at_instances_of(int).apply(str) == [Wrapper("1"), Wrapper(["2"])]
    assert sk.select(tree).at_instances_of(Wrapper).count() == 2


def test_nodes_refusing_holes_are_named_in_the_error():
    class Strict:
        def __init__(self, value):
            if not isinstance(value, int):
                raise TypeError("Strict holds ints only")
            self.value = value

    jax.tree_util.register_pytree_node(
        Strict, lambda s: ((s.value,), None), lambda _, c: Strict(c[0])
    )
    with pytest.raises(ValueError, match=r"type .*Strict.*refuses such children") as info:
        sk.select({"s": Strict(1)}).at_pytree_leaves()
    assert isinstance(info.value.__cause__, TypeError)


# ----------------------------------------------------------- nested selections


def test_selection_of_a_selection_round_trips():
    inner = sk.select({"a": [1, 2], "b": 3}).at(lambda t: t["a"][0])
    outer = sk.select(inner).at_instances_of(int)
    assert outer.get_sequence() == (1, 2, 3)
    assert outer.deselect() == inner
    assert outer.apply(lambda x: x * 10).deselect() == {"a": [10, 20], "b": 30}


def test_inner_holes_are_quoted_in_the_remainder():
    inner = sk.select([1, 2]).at(lambda t: t[0])
    outer = sk.select(inner).at_instances_of(int)
    assert outer.remainder.remainder[0] == SelectionQuote(SelectionHole((SequenceKey(0),)))


def test_selecting_holes_of_an_inner_selection():
    inner = sk.select({"a": [1, 2], "b": 3}).at(lambda t: t["a"][0])
    middle = sk.select(inner).at_instances_of(int)
    outer = sk.select(middle).at_instances_of(SelectionHole)
    assert outer.count() == 4
    assert outer.deselect() == middle
    # The middle selection's quote of the innermost hole is itself quoted, and
    # the hole inside it, now selected by `outer`, is replaced by outer's hole.
    quoted = outer.remainder.remainder.remainder["a"][0]
    assert type(quoted) is SelectionQuote and type(quoted.quoted) is SelectionQuote
    assert quoted.quoted.quoted == SelectionHole(
        (
            GetAttrKey("remainder"),
            GetAttrKey("remainder"),
            DictKey("a"),
            SequenceKey(0),
            GetAttrKey("quoted"),
        )
    )


def test_nested_selections_survive_every_operation():
    inner = sk.select({"a": [1, 2], "b": 3}).at(lambda t: t["a"][0])
    outer = sk.select(inner).at_instances_of(int)
    assert outer.where(lambda x: x > 1).deselect() == inner
    assert outer.invert().deselect() == inner
    assert outer.at_childless().deselect() == inner
    assert sk.select(inner).at_instances_of(sk.Selection, innermost=True).deselect() == inner
    assert sk.select(outer).at_instances_of(SelectionQuote).at_children().deselect() == outer
    assert sk.combine(*outer.partition()) == inner
    assert sk.combine(*outer.partition(at_leaves=True)) == inner


def test_list_surgery_inside_a_nested_selection():
    inner = sk.select([[1, 2], 3]).at(lambda t: t[1])
    result = sk.select(inner).at_instances_of(int).where(lambda x: x == 1).insert_after(9)
    assert result.deselect() == [[1, 9, 2], 3]


# ---------------------------------------------------------- malformed selections


def test_malformed_selection_hole_without_value():
    bad = sk.Selection(collections.OrderedDict(), [SelectionHole((SequenceKey(0),))])
    with pytest.raises(ValueError, match="no entry for that keypath"):
        bad.deselect()


def test_malformed_selection_value_without_hole():
    bad = sk.Selection(collections.OrderedDict([((SequenceKey(0),), 1)]), [5])
    with pytest.raises(ValueError, match="have no SelectionHole"):
        bad.deselect()


def test_malformed_selection_duplicate_hole():
    path = (SequenceKey(0),)
    bad = sk.Selection(
        collections.OrderedDict([(path, 1)]), [SelectionHole(path), SelectionHole(path)]
    )
    with pytest.raises(ValueError, match="two SelectionHoles"):
        bad.deselect()


def test_malformed_selection_bad_quote():
    bad = sk.Selection(collections.OrderedDict(), [SelectionQuote(5)])
    with pytest.raises(ValueError, match="only ever wraps"):
        bad.deselect()


def test_selection_built_by_hand_in_another_order_still_rebuilds():
    a, b = (SequenceKey(0),), (SequenceKey(1),)
    selection = sk.Selection(
        collections.OrderedDict([(b, "B"), (a, "A")]), [SelectionHole(a), SelectionHole(b)]
    )
    assert selection.deselect() == ["A", "B"]


def test_refine_with_a_hand_built_inner_selection_in_another_order():
    a, b = (SequenceKey(0),), (SequenceKey(1),)

    def hand_built(node):
        entries = collections.OrderedDict([(b, node[1]), (a, node[0])])
        return sk.Selection(entries, [SelectionHole(a), SelectionHole(b)])

    refined = sk.select({"x": ["A", "B"]}).at(lambda t: t["x"]).refine(hand_built)
    assert refined.set_by_path(lambda p: p[-1].idx) == {"x": [0, 1]}
