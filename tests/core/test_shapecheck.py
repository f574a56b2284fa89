"""Tests for shape checking (`sk.chk`)."""

import copy
import dataclasses
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

chk = sk.chk
var = chk.var
ArraySpec = chk.ArraySpec


def mismatch_lines(excinfo):
    """The per-keypath lines of a StructureMismatchError (the header dropped)."""
    lines = str(excinfo.value).splitlines()
    assert lines[0].endswith(":")
    return [line.strip() for line in lines[1:]]


# -- dimension variables -------------------------------------------------------


def test_star_var_unpacks_to_one_multidimvar():
    assert (1, *var("rest")) == (1, chk.MultiDimVar("rest"))


def test_double_star_var_unpacks_to_remaining_axes_entry():
    assert {"a": 1, **var("rest")} == {
        "a": 1,
        chk.MultiDimVar("rest"): chk.RemainingAxisPlaceholder(),
    }


def test_var_indexing_makes_element_variables():
    assert var("x")[0] == chk.DimVar(("x", 0))
    assert var("x")["heads"] == chk.DimVar(("x", "heads"))


def test_element_variables_cannot_be_indexed_again():
    with pytest.raises(TypeError, match=r"x\[0\]"):
        var("x")[0][1]


def test_var_rejects_non_string_names():
    with pytest.raises(TypeError, match="non-empty string"):
        var(3)


def test_var_rejects_float_index():
    with pytest.raises(TypeError, match="not float"):
        var("x")[1.5]


def test_vars_for_axes_from_names():
    assert chk.vars_for_axes("io", ["in", "out"]) == {
        "in": var("io")["in"],
        "out": var("io")["out"],
    }


def test_vars_for_axes_from_sizes_makes_known_dims():
    assert chk.vars_for_axes("io", {"in": 3, "out": None}) == {
        "in": chk.KnownDim(("io", "in"), 3),
        "out": var("io")["out"],
    }


def test_vars_for_axes_rejects_bad_size():
    with pytest.raises(TypeError, match="axis 'in' must be an int or None"):
        chk.vars_for_axes("io", {"in": "big"})


def test_vars_for_axes_rejects_a_single_string():
    with pytest.raises(TypeError, match="not a single string"):
        chk.vars_for_axes("io", "in")


# -- ArraySpec -------------------------------------------------------------------


def test_arrayspec_has_no_pytree_leaves():
    assert jax.tree_util.tree_leaves({"a": ArraySpec(shape=(3,))}) == []


def test_arrayspec_is_hashable_and_order_insensitive_in_named_shape():
    a = ArraySpec(shape=(var("n"),), named_shape={"x": 1, "y": 2})
    b = ArraySpec(shape=(var("n"),), named_shape={"y": 2, "x": 1})
    assert a == b
    assert hash(a) == hash(b)


def test_arrayspec_can_be_a_static_jit_argument():
    spec = ArraySpec(shape=(2,), dtype=jnp.float32, named_shape={"a": 3})

    @jax.jit
    def make(x):
        return x

    assert make({"spec": spec, "x": 1.0})["spec"] == spec


def test_arrayspec_named_shape_is_immutable():
    spec = ArraySpec(named_shape={"a": 3})
    with pytest.raises(TypeError, match="immutable"):
        spec.named_shape["b"] = 4


def test_arrayspec_survives_copy_and_pickle():
    spec = ArraySpec(shape=(var("n"), *var("m")), dtype=np.floating, named_shape={"a": 3})
    assert copy.deepcopy(spec) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_arrayspec_normalizes_concrete_dtypes():
    assert ArraySpec(dtype=jnp.float32).dtype == np.dtype("float32")
    assert isinstance(ArraySpec(dtype="int8").dtype, np.dtype)


def test_arrayspec_keeps_abstract_dtypes():
    assert ArraySpec(dtype=np.floating).dtype is np.floating
    assert ArraySpec().dtype is np.generic


def test_arrayspec_rejects_unknown_dtype():
    with pytest.raises(TypeError, match="'flaot32'"):
        ArraySpec(dtype="flaot32")


def test_arrayspec_rejects_negative_dim():
    with pytest.raises(ValueError, match="negative dim -1"):
        ArraySpec(shape=(2, -1))


def test_arrayspec_rejects_non_dim_in_shape():
    with pytest.raises(TypeError, match="invalid dim 'n'"):
        ArraySpec(shape=(2, "n"))


def test_arrayspec_rejects_bare_int_shape():
    with pytest.raises(TypeError, match=r"Write \(n,\)"):
        ArraySpec(shape=3)


def test_arrayspec_accepts_numpy_ints_as_dims():
    spec = ArraySpec(shape=[np.int64(2)], named_shape={"a": np.int32(3)})
    assert spec.shape == (2,)
    assert type(spec.shape[0]) is int
    assert type(spec.named_shape["a"]) is int


def test_arrayspec_rejects_misplaced_remaining_axes_marker():
    with pytest.raises(TypeError, match="only belongs under a"):
        ArraySpec(named_shape={"a": chk.RemainingAxisPlaceholder()})


def test_positional_shape_is_the_shape():
    assert ArraySpec(shape=(2, 3), named_shape={"a": 1}).positional_shape == (2, 3)


def test_floating_named():
    spec = ArraySpec.floating_named({"a": 3})
    assert spec == ArraySpec(named_shape={"a": 3}, dtype=np.floating)


def test_into_pytree_plain():
    assert ArraySpec(shape=(2, 3), dtype=jnp.int8).into_pytree() == jax.ShapeDtypeStruct(
        (2, 3), jnp.int8
    )


def test_into_pytree_named_puts_positional_axes_first():
    spec = ArraySpec(shape=(2,), dtype=jnp.float32, named_shape={"b": 3, "a": 4})
    result = spec.into_pytree()
    assert sk.nx.is_namedarray(result)
    assert result.positional_shape == (2,)
    assert result.named_shape == {"b": 3, "a": 4}
    assert result.data_array.shape == (2, 3, 4)
    assert isinstance(result.data_array, jax.ShapeDtypeStruct)


def test_into_pytree_uses_known_dim_sizes():
    spec = ArraySpec(shape=(chk.KnownDim("n", 5),), dtype=jnp.float32)
    assert spec.into_pytree().shape == (5,)


def test_into_pytree_refuses_variables():
    with pytest.raises(ValueError, match=r"shape\[0\] .* DimVar\(name='n'\)"):
        ArraySpec(shape=(var("n"),), dtype=jnp.float32).into_pytree()


def test_into_pytree_refuses_abstract_dtype():
    with pytest.raises(ValueError, match="abstract dtype"):
        ArraySpec(shape=(2,), dtype=np.floating).into_pytree()


def test_into_pytree_round_trips_through_check_structure():
    spec = ArraySpec(shape=(2,), dtype=jnp.float32, named_shape={"a": 4})
    assert dict(chk.check_structure(spec.into_pytree(), spec)) == {}


# -- check_structure: solving --------------------------------------------------------


def test_solves_variable_across_leaves():
    n, d = var("n"), var("d")
    result = chk.check_structure(
        {"x": jnp.zeros((4, 3)), "y": jnp.zeros((4,))},
        {"x": ArraySpec(shape=(n, d)), "y": ArraySpec(shape=(n,))},
    )
    assert dict(result) == {"n": 4, "d": 3}


def test_star_var_captures_a_run_of_dims():
    result = chk.check_structure(jnp.zeros((1, 2, 3, 4)), ArraySpec(shape=(1, *var("m"), 4)))
    assert result["m"] == (2, 3)


def test_star_var_may_capture_nothing():
    result = chk.check_structure(jnp.zeros((1, 4)), ArraySpec(shape=(1, *var("m"), 4)))
    assert result["m"] == ()


def test_two_star_vars_solved_by_another_leaf_in_any_order():
    v = var
    specs = [ArraySpec(shape=(*v("a"), *v("b"))), ArraySpec(shape=(*v("a"),))]
    values = [jnp.zeros((1, 2, 3, 4, 5)), jnp.zeros((1, 2))]
    expected = {"a": (1, 2), "b": (3, 4, 5)}
    assert dict(chk.check_structure(values, specs)) == expected
    assert dict(chk.check_structure(values[::-1], specs[::-1])) == expected


def test_repeated_star_var_splits_evenly():
    result = chk.check_structure(jnp.zeros((2, 3, 2, 3)), ArraySpec(shape=(*var("a"), *var("a"))))
    assert result["a"] == (2, 3)


def test_double_star_var_captures_remaining_named_axes():
    value = sk.nx.zeros({"a": 2, "b": 3, "c": 4})
    result = chk.check_structure(value, ArraySpec(named_shape={"a": var("A"), **var("rest")}))
    assert dict(result) == {"A": 2, "rest": {"b": 3, "c": 4}}


def test_double_star_var_may_capture_nothing_on_plain_arrays():
    result = chk.check_structure(jnp.zeros(3), ArraySpec(shape=(3,), named_shape={**var("r")}))
    assert result["r"] == {}


def test_two_double_star_vars_solved_by_another_leaf():
    result = chk.check_structure(
        [sk.nx.zeros({"a": 1, "b": 2}), sk.nx.zeros({"a": 1})],
        [
            ArraySpec(named_shape={**var("x"), **var("y")}),
            ArraySpec(named_shape={**var("x")}),
        ],
    )
    assert dict(result) == {"x": {"a": 1}, "y": {"b": 2}}


def test_named_array_matches_positional_and_named_parts():
    value = sk.nx.wrap(jnp.zeros((2, 3))).tag_prefix("a")
    result = chk.check_structure(value, ArraySpec(shape=(var("p"),), named_shape={"a": var("q")}))
    assert dict(result) == {"p": 3, "q": 2}


def test_element_var_agrees_with_star_var():
    result = chk.check_structure(
        [jnp.zeros((2, 3)), jnp.zeros((3,))],
        [ArraySpec(shape=(*var("x"),)), ArraySpec(shape=(var("x")[1],))],
    )
    assert dict(result) == {"x": (2, 3)}


def test_element_var_agrees_with_double_star_var():
    result = chk.check_structure(
        [sk.nx.zeros({"a": 2, "b": 3}), jnp.zeros((3,))],
        [ArraySpec(named_shape={**var("x")}), ArraySpec(shape=(var("x")["b"],))],
    )
    assert dict(result) == {"x": {"a": 2, "b": 3}}


def test_element_vars_alone_are_reported_as_a_dict():
    result = chk.check_structure(jnp.zeros((3, 4)), ArraySpec(shape=(var("x")[0], var("x")["b"])))
    assert dict(result) == {"x": {0: 3, "b": 4}}


def test_vars_for_axes_solves_named_sizes():
    spec = ArraySpec(named_shape={**chk.vars_for_axes("q", ["a", "b"]), **var("rest")})
    result = chk.check_structure(sk.nx.zeros({"a": 2, "b": 3, "c": 4}), spec)
    assert dict(result) == {"q": {"a": 2, "b": 3}, "rest": {"c": 4}}


def test_known_dim_binds_its_name():
    result = chk.check_structure(jnp.zeros(3), ArraySpec(shape=(chk.KnownDim("n", 3),)))
    assert dict(result) == {"n": 3}


def test_known_vars_are_used_and_returned():
    result = chk.check_structure(
        jnp.zeros((3, 4)),
        ArraySpec(shape=(var("n"), *var("m"))),
        known_vars={"n": 3, "m": (4,), "unused": 7},
    )
    assert dict(result) == {"n": 3, "m": (4,), "unused": 7}


def test_known_vars_can_be_a_match_result():
    spec = ArraySpec(shape=(var("n"),), named_shape={**var("r")})
    value = sk.nx.wrap(jnp.zeros((2, 3))).tag_prefix("a")
    first = chk.check_structure(value, spec)
    again = chk.check_structure(value, spec, known_vars=first)
    assert again == first


def test_known_vars_reject_non_sizes():
    with pytest.raises(TypeError, match=r"known_vars\['n'\] = 'big'"):
        chk.check_structure(jnp.zeros(3), ArraySpec(shape=(var("n"),)), known_vars={"n": "big"})


def test_known_vars_reject_self_conflicts():
    with pytest.raises(ValueError, match="known_vars are inconsistent"):
        chk.check_structure(jnp.zeros(3), ArraySpec(), known_vars={"x": (1,), ("x", 0): 2})


def test_wildcards_match_any_subtree():
    result = chk.check_structure(
        {"a": {"c": [1, 2]}, "b": jnp.zeros(3)},
        {"a": chk.Wildcard("anything"), "b": chk.ANY},
    )
    assert dict(result) == {}
    assert dict(chk.check_structure({"x": [1, "y"]}, chk.ANY)) == {}


def test_non_spec_leaves_are_compared_by_equality():
    assert dict(chk.check_structure({"a": 1, "b": "x"}, {"a": 1, "b": "x"})) == {}


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (jnp.zeros(3, jnp.bfloat16), np.floating),
        (jnp.zeros(3, jnp.float32), np.floating),
        (jnp.zeros(3, jnp.float32), jnp.inexact),
        (jnp.zeros(3, jnp.int8), np.integer),
        (np.zeros(3, np.uint8), np.unsignedinteger),
        (jnp.zeros(3, jnp.int32), np.generic),
    ],
)
def test_abstract_dtypes_accept_subdtypes(value, dtype):
    chk.check_structure(value, ArraySpec(shape=(3,), dtype=dtype))


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (jnp.zeros(3, jnp.int32), np.floating),
        (jnp.zeros(3, jnp.bool_), np.integer),
        (jnp.zeros(3, jnp.float32), np.complexfloating),
    ],
)
def test_abstract_dtypes_reject_other_dtypes(value, dtype):
    with pytest.raises(chk.StructureMismatchError, match=f"expected {dtype.__name__}"):
        chk.check_structure(value, ArraySpec(shape=(3,), dtype=dtype))


def test_concrete_dtype_must_match_exactly():
    with pytest.raises(chk.StructureMismatchError, match="dtype is float16, expected float32"):
        chk.check_structure(jnp.zeros(3, jnp.float16), ArraySpec(shape=(3,), dtype=jnp.float32))


def test_python_scalars_use_jax_default_dtypes():
    chk.check_structure(3, ArraySpec(dtype=jnp.int32))
    chk.check_structure(2.0, ArraySpec(dtype=jnp.float32))
    chk.check_structure(True, ArraySpec(dtype=jnp.bool_))


def test_numpy_scalars_keep_their_dtype():
    chk.check_structure(np.float64(1.0), ArraySpec(dtype=np.float64))


def test_shape_dtype_structs_are_checked_like_arrays():
    result = chk.check_structure(
        jax.ShapeDtypeStruct((5, 2), jnp.int8), ArraySpec(shape=(var("n"), 2), dtype=jnp.int8)
    )
    assert result["n"] == 5


def test_concrete_arrayspec_values_are_checked_like_arrays():
    result = chk.check_structure(ArraySpec(shape=(3,)), ArraySpec(shape=(var("n"),)))
    assert result["n"] == 3


def test_works_on_tracers_inside_jit():
    @jax.jit
    def f(x):
        n = chk.check_structure(x, ArraySpec(shape=(var("n"), 2)))["n"]
        return jnp.zeros(n)

    assert f(jnp.ones((4, 2))).shape == (4,)


def test_match_inside_structs():
    @sk.pytree_dataclass
    class Pair(sk.Struct):
        left: object
        right: object

    result = chk.check_structure(
        Pair(jnp.zeros(2), jnp.zeros((2, 2))),
        Pair(ArraySpec(shape=(var("n"),)), ArraySpec(shape=(var("n"), var("n")))),
    )
    assert result.n == 2


# -- MatchResult -----------------------------------------------------------------


def make_result():
    spec = ArraySpec(shape=(var("a"), var("b")))
    return chk.check_structure(jnp.zeros((3, 4)), spec)


def test_match_result_is_a_mapping():
    result = make_result()
    assert dict(result) == {"a": 3, "b": 4}
    assert len(result) == 2
    assert list(result) == ["a", "b"]
    assert "a" in result
    assert result == {"a": 3, "b": 4}


def test_match_result_attribute_and_tuple_access():
    result = make_result()
    assert result.a == 3
    assert result["a", "b"] == (3, 4)


def test_match_result_missing_key_lists_available_names():
    with pytest.raises(KeyError, match=r"'c'.*\['a', 'b'\]"):
        make_result()["c"]


def test_match_result_missing_attribute_lists_available_names():
    with pytest.raises(AttributeError, match=r"'c'.*\['a', 'b'\]"):
        make_result().c  # noqa: B018


def test_match_result_repr():
    assert repr(make_result()) == "MatchResult({'a': 3, 'b': 4})"


# -- error messages -----------------------------------------------------------------


def test_conflict_names_variable_both_values_and_where_solved():
    n = var("n")
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            {"a": jnp.zeros((4, 3)), "b": jnp.zeros((5,))},
            {"a": ArraySpec(shape=(n, 3)), "b": ArraySpec(shape=(n,))},
        )
    assert mismatch_lines(excinfo) == [
        "['b']: expected generic(n), found float32(5): dim 0 is 5 but n = 4 (solved at ['a'])"
    ]


def test_one_line_per_mismatching_keypath():
    n = var("n")
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            {"a": jnp.zeros((4, 3), jnp.int32), "b": jnp.zeros((5, 2)), "c": jnp.zeros(4)},
            {
                "a": ArraySpec(shape=(n, 2), dtype=jnp.float32),
                "b": ArraySpec(shape=(n,)),
                "c": ArraySpec(shape=(n,)),
            },
        )
    lines = mismatch_lines(excinfo)
    assert str(excinfo.value).splitlines()[0] == "Structure mismatch at 2 keypaths:"
    assert lines == [
        "['a']: expected float32(n, 2), found int32(4, 3): dtype is int32, expected float32;"
        " dim 1 is 3, expected 2",
        "['b']: expected generic(n), found float32(5, 2): has 2 positional dims, expected 1",
    ]
    assert excinfo.value.problems == tuple(lines)


def test_mismatch_error_pickles_with_its_problems():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(jnp.zeros(2), ArraySpec(shape=(3,)))
    restored = pickle.loads(pickle.dumps(excinfo.value))
    assert str(restored) == str(excinfo.value)
    assert restored.problems == excinfo.value.problems


def test_known_vars_conflicts_name_known_vars_and_error_prefix_is_used():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            {"x": jnp.zeros((2, 3))},
            {"x": ArraySpec(shape=(var("n"), 3))},
            known_vars={"n": 5},
            error_prefix="In Linear: ",
        )
    message = str(excinfo.value)
    assert message.startswith("In Linear: Structure mismatch at 1 keypath:")
    assert mismatch_lines(excinfo) == [
        "['x']: expected generic(n, 3), found float32(2, 3): dim 0 is 2 but n = 5 (from known_vars)"
    ]


def test_conflict_within_one_leaf():
    with pytest.raises(
        chk.StructureMismatchError, match=r"dim 1 is 3 but n = 2 \(solved at root\)"
    ):
        chk.check_structure(jnp.zeros((2, 3)), ArraySpec(shape=(var("n"), var("n"))))


def test_star_var_conflict_names_both_tuples():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            [jnp.zeros((2, 3, 1)), jnp.zeros((2, 4, 1))],
            [ArraySpec(shape=(*var("b"), 1)), ArraySpec(shape=(*var("b"), 1))],
        )
    assert mismatch_lines(excinfo) == [
        "[1]: expected generic(*b, 1), found float32(2, 4, 1): dim 1 is 4 but b[1] = 3 from"
        " *b = (2, 3) (solved at [0])"
    ]


def test_star_var_length_conflict():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            [jnp.zeros((3, 4)), jnp.zeros((3,))],
            [ArraySpec(shape=(*var("x"),)), ArraySpec(shape=(*var("x"),))],
        )
    assert mismatch_lines(excinfo) == [
        "[1]: expected generic(*x), found float32(3): has 1 positional dim, expected 2"
        " (*x = (3, 4) solved at [0])"
    ]


def test_double_star_var_conflict_names_both_dicts():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            [sk.nx.zeros({"a": 2, "b": 3}), sk.nx.zeros({"a": 2, "b": 5})],
            [
                ArraySpec(named_shape={"a": 2, **var("r")}),
                ArraySpec(named_shape={**var("r"), "a": 2}),
            ],
        )
    assert mismatch_lines(excinfo) == [
        "[1]: expected generic(| **r, a:2), found float32(| a:2, b:5): axis b is 5 but"
        " r['b'] = 3 from **r = {'b': 3} (solved at [0])"
    ]


def test_element_var_conflict_with_later_star_var():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            [jnp.zeros((4,)), jnp.zeros((2, 3))],
            [ArraySpec(shape=(var("x")[1],)), ArraySpec(shape=(*var("x"),))],
        )
    assert mismatch_lines(excinfo) == [
        "[1]: expected generic(*x), found float32(2, 3): dims of *x give *x = (2, 3), so"
        " x[1] = 3, but x[1] = 4 (solved at [0])"
    ]


def test_element_of_missing_axis_is_reported():
    with pytest.raises(chk.StructureMismatchError, match=r"has no element 'c'"):
        chk.check_structure(
            [sk.nx.zeros({"a": 2}), jnp.zeros((3,))],
            [ArraySpec(named_shape={**var("x")}), ArraySpec(shape=(var("x")["c"],))],
        )


def test_same_name_as_single_dim_and_collection_is_reported():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(jnp.zeros((3, 4)), ArraySpec(shape=(var("x"), *var("x"))))
    assert mismatch_lines(excinfo) == [
        "root: expected generic(x, *x), found float32(3, 4): dims of *x give *x = (4,), but"
        " x = 3 (solved at root) is a single dim"
    ]


def test_same_name_as_star_and_double_star_is_reported():
    with pytest.raises(chk.StructureMismatchError, match=r"\*\*x is used for named axes, but \*x"):
        chk.check_structure(
            [jnp.zeros((3,)), sk.nx.zeros({"a": 1})],
            [ArraySpec(shape=(*var("x"),)), ArraySpec(named_shape={**var("x")})],
        )


def test_ambiguous_split_is_reported():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(jnp.zeros((1, 2, 3)), ArraySpec(shape=(*var("a"), *var("b"))))
    assert mismatch_lines(excinfo) == [
        "root: expected generic(*a, *b), found float32(1, 2, 3): cannot tell how to split the"
        " positional dims between *a and *b; bind all but one of them elsewhere (another leaf"
        " or known_vars)"
    ]


def test_too_few_dims_for_star_var():
    with pytest.raises(
        chk.StructureMismatchError, match="has 1 positional dim, expected at least 2"
    ):
        chk.check_structure(jnp.zeros((2,)), ArraySpec(shape=(2, *var("r"), 4)))


def test_named_axes_missing_and_unexpected():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            sk.nx.zeros({"a": 2, "b": 3}), ArraySpec(named_shape={"a": 2, "c": var("c")})
        )
    assert mismatch_lines(excinfo) == [
        "root: expected generic(| a:2, c:c), found float32(| a:2, b:3): missing named axes"
        " ['c']; unexpected named axes ['b']"
    ]


def test_known_dim_mismatch_names_the_variable():
    with pytest.raises(chk.StructureMismatchError, match=r"dim 0 is 3, expected n = 4 \(config\)"):
        chk.check_structure(jnp.zeros(3), ArraySpec(shape=(chk.KnownDim("n", 4, "config"),)))


def test_non_array_value_is_reported():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure({"w": "hello"}, {"w": ArraySpec(shape=(3,))})
    assert mismatch_lines(excinfo) == [
        "['w']: expected generic(3), found str 'hello': not an array"
    ]


def test_constant_mismatch_is_reported():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure({"a": 1, "b": "x"}, {"a": 2, "b": "x"})
    assert mismatch_lines(excinfo) == [
        "['a']: expected 2, found int 1: not equal to the pattern's constant"
    ]


def test_array_compared_with_a_scalar_constant_is_a_mismatch_not_a_broadcast():
    # penzai compares with broadcasting, so zeros(3) "equals" 0.0; saikei
    # requires the same shape.
    with pytest.raises(chk.StructureMismatchError, match=r"shape \(3,\) differs"):
        chk.check_structure({"a": jnp.zeros(3)}, {"a": 0.0})


@pytest.mark.parametrize(
    "value",
    [np.array([3, 5]), jnp.array([3, 5]), np.array([3.0, 5.0])],
    ids=["numpy", "jax", "numpy-float"],
)
def test_array_leaf_equal_to_an_array_constant_matches(value):
    # penzai 0.2.5 accepts a numpy/jax leaf equal to its (array) pattern.
    assert dict(chk.check_structure([value], [np.array([3, 5])])) == {}
    assert dict(chk.check_structure({"k": value}, {"k": jnp.array([3, 5])})) == {}


@pytest.mark.parametrize(
    ("value", "constant", "message"),
    [
        (np.array([3, 5]), np.array([3, 6]), "not equal to the pattern's constant"),
        (np.array([3, 5]), np.array([3, 5, 1]), "differs from the shape"),
        (np.array([1.0, np.nan]), np.array([1.0, np.nan]), "not equal"),
    ],
)
def test_array_leaf_not_equal_to_an_array_constant_is_reported(value, constant, message):
    with pytest.raises(chk.StructureMismatchError, match=message):
        chk.check_structure([value], [constant])


def test_traced_leaf_compared_with_an_array_constant_is_a_clear_mismatch():
    def check(x):
        chk.check_structure([x], [np.array([3, 5])])
        return x

    with pytest.raises(chk.StructureMismatchError, match="traced value"):
        jax.jit(check)(jnp.array([3, 5]))


def test_structure_mismatch_reports_missing_dict_keys_with_keypaths():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(
            {"a": jnp.zeros(3), "b": {"x": 1, "y": 2}},
            {"a": ArraySpec(shape=(3,)), "b": {"x": 1, "z": 2}, "c": 1},
        )
    assert mismatch_lines(excinfo) == [
        "root: expected a dict with keys ['a', 'b', 'c'], found a dict with keys ['a', 'b'];"
        " missing 'c'",
        "['b']: expected a dict with keys ['x', 'z'], found a dict with keys ['x', 'y'];"
        " missing 'z'; unexpected 'y'",
    ]


def test_structure_mismatch_reports_list_lengths():
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure({"l": [jnp.zeros(3)]}, {"l": [ArraySpec(), ArraySpec()]})
    assert mismatch_lines(excinfo) == [
        "['l']: expected a list of length 2, found a list of length 1"
    ]


def test_structure_mismatch_reports_node_type_inside_struct():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        inner: object

    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(Box(jnp.zeros(3)), Box([ArraySpec(shape=(3,))]))
    assert mismatch_lines(excinfo) == ["Box.inner: expected a list of length 1, found float32(3)"]


def test_structure_mismatch_reports_struct_metadata():
    @sk.pytree_dataclass
    class Tagged(sk.Struct):
        value: object
        tag: str = dataclasses.field(metadata={"pytree_node": False})

    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(Tagged(jnp.zeros(3), "a"), Tagged(ArraySpec(shape=(3,)), "b"))
    assert mismatch_lines(excinfo) == ["root: expected a Tagged with tag='b', found tag='a'"]


# -- property tests against numpy ---------------------------------------------------

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, data=st.data())
def test_star_var_captures_exactly_the_middle(shape, data):
    start = data.draw(st.integers(0, len(shape)))
    stop = data.draw(st.integers(start, len(shape)))
    pattern = (*shape[:start], *var("mid"), *shape[stop:])
    result = chk.check_structure(np.zeros(shape), ArraySpec(shape=pattern))
    assert result["mid"] == shape[start:stop]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 4), max_size=5),
    data=st.data(),
)
def test_double_star_var_captures_exactly_the_other_axes(sizes, data):
    explicit = data.draw(st.sets(st.sampled_from(sorted(sizes)))) if sizes else set()
    value = sk.nx.zeros(sizes)
    pattern = {**{name: sizes[name] for name in explicit}, **var("rest")}
    result = chk.check_structure(value, ArraySpec(named_shape=pattern))
    assert result["rest"] == {name: size for name, size in sizes.items() if name not in explicit}


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    tails=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    bump=st.integers(0, 3),
)
def test_shared_variable_accepts_equal_and_rejects_different_sizes(n, tails, bump):
    values = [np.zeros((n, t)) for t in tails]
    patterns = [ArraySpec(shape=(var("n"), t)) for t in tails]
    assert chk.check_structure(values, patterns)["n"] == n
    bad = bump % len(values)
    values[bad] = np.zeros((n + 1, tails[bad]))
    if bad == 0 and len(values) == 1:
        assert chk.check_structure(values, patterns)["n"] == n + 1
        return
    with pytest.raises(chk.StructureMismatchError) as excinfo:
        chk.check_structure(values, patterns)
    lines = mismatch_lines(excinfo)
    # Leaf 0 fixes n; every leaf that disagrees with it gets exactly one line.
    disagreeing = [i for i, v in enumerate(values) if v.shape[0] != values[0].shape[0]]
    assert [line.split(":")[0] for line in lines] == [f"[{i}]" for i in disagreeing]


@settings(max_examples=40, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from([np.float32, np.int8, np.bool_, np.uint16, np.complex64]),
)
def test_as_array_structure_matches_numpy_metadata(shape, dtype):
    value = {"x": np.zeros(shape, dtype), "name": "layer"}
    structure = chk.as_array_structure(value)
    assert structure["x"].shape == np.zeros(shape, dtype).shape
    assert structure["x"].dtype == np.dtype(dtype)
    assert structure["name"] is chk.ANY
    chk.check_structure(value, structure)


# -- substitution and abstraction ---------------------------------------------------------


def test_get_dimension_variables_lists_each_kind():
    spec = ArraySpec(
        shape=(var("n"), *var("m"), chk.KnownDim("k", 4)),
        named_shape={"a": var("A"), "b": var("q")["b"], **var("rest")},
    )
    subst = chk.get_dimension_variables({"x": spec, "y": 3})
    assert subst.size_variables == {"n": var("n"), "A": var("A"), ("q", "b"): var("q")["b"]}
    assert subst.sequence_variables == {"m": (chk.MultiDimVar("m"),)}
    assert subst.mapping_variables == {
        "rest": {chk.MultiDimVar("rest"): chk.RemainingAxisPlaceholder()}
    }


def test_identity_substitution_only_resolves_known_dims():
    spec = ArraySpec(
        shape=(var("n"), *var("m"), chk.KnownDim("k", 4)),
        dtype=jnp.float32,
        named_shape={"a": var("A"), **var("rest")},
    )
    subst = chk.get_dimension_variables(spec)
    result = chk.full_substitute_dimension_variables(spec, subst)
    assert result == ArraySpec(
        shape=(var("n"), *var("m"), 4),
        dtype=jnp.float32,
        named_shape={"a": var("A"), **var("rest")},
    )


def test_full_substitution_makes_concrete_specs():
    spec = ArraySpec(
        shape=(var("n"), *var("m")), dtype=jnp.float32, named_shape={"a": 1, **var("rest")}
    )
    subst = chk.DimensionVariableSubstitution(
        size_variables={"n": 5},
        sequence_variables={"m": (1, 2)},
        mapping_variables={"rest": {"r": 7}},
    )
    result = chk.full_substitute_dimension_variables({"x": spec, "y": "keep"}, subst)
    assert result == {
        "x": ArraySpec(shape=(5, 1, 2), dtype=jnp.float32, named_shape={"a": 1, "r": 7}),
        "y": "keep",
    }
    assert result["x"].into_pytree().named_shape == {"a": 1, "r": 7}


def test_substitution_can_rename_variables():
    spec = ArraySpec(shape=(var("n"),), named_shape={**var("rest")})
    subst = chk.DimensionVariableSubstitution(
        size_variables={"n": var("batch")},
        mapping_variables={"rest": {"seq": var("s"), **var("others")}},
    )
    result = chk.full_substitute_dimension_variables(spec, subst)
    assert result == ArraySpec(
        shape=(var("batch"),), named_shape={"seq": var("s"), **var("others")}
    )


def test_substitution_fills_element_vars_from_collections():
    spec = ArraySpec(shape=(var("x")[1],), named_shape={"a": var("y")["a"]})
    subst = chk.DimensionVariableSubstitution(
        sequence_variables={"x": (3, 4)}, mapping_variables={"y": {"a": 5}}
    )
    assert chk.full_substitute_dimension_variables(spec, subst) == ArraySpec(
        shape=(4,), named_shape={"a": 5}
    )


def test_substitution_missing_variable_names_it_and_its_keypath():
    structure = {"layer": [ArraySpec(), ArraySpec(shape=(var("n"),))]}
    with pytest.raises(
        ValueError, match=re.escape("at ['layer'][1], there is no value for the variable n")
    ):
        chk.full_substitute_dimension_variables(structure, chk.DimensionVariableSubstitution())


def test_substitution_refuses_duplicate_axes():
    spec = ArraySpec(named_shape={"a": 1, **var("rest")})
    subst = chk.DimensionVariableSubstitution(mapping_variables={"rest": {"a": 2}})
    with pytest.raises(ValueError, match="'a' from \\*\\*rest is already present"):
        chk.full_substitute_dimension_variables(spec, subst)


def test_as_array_structure_abstracts_each_kind_of_leaf():
    tree = {
        "a": jnp.zeros((2, 3)),
        "b": sk.nx.wrap(jnp.zeros((5, 4))).tag_prefix("q"),
        "c": 3,
        "d": "hi",
        "e": np.zeros(2, np.int8),
        "f": jax.ShapeDtypeStruct((1,), jnp.int32),
        "g": None,
    }
    assert chk.as_array_structure(tree) == {
        "a": ArraySpec(shape=(2, 3), dtype=jnp.float32),
        "b": ArraySpec(shape=(4,), dtype=jnp.float32, named_shape={"q": 5}),
        "c": ArraySpec(dtype=jnp.int32),
        "d": chk.ANY,
        "e": ArraySpec(shape=(2,), dtype=np.int8),
        "f": ArraySpec(shape=(1,), dtype=jnp.int32),
        "g": None,
    }
    chk.check_structure(tree, chk.as_array_structure(tree))


def test_bare_shape_variable_is_an_unpacked_run_of_dims():
    # penzai reads shape=var("x") as shape=(*var("x"),).
    spec = chk.ArraySpec(shape=chk.var("x"))
    assert spec == chk.ArraySpec(shape=(*chk.var("x"),))
    assert dict(chk.check_structure(jnp.zeros((2, 3)), spec)) == {"x": (2, 3)}
    assert dict(chk.check_structure(jnp.zeros(()), spec)) == {"x": ()}


def test_bare_named_shape_variable_is_all_named_axes():
    spec = chk.ArraySpec(named_shape=chk.var("y"))
    assert spec == chk.ArraySpec(named_shape={**chk.var("y")})
    assert dict(chk.check_structure(sk.nx.zeros({"a": 2}), spec)) == {"y": {"a": 2}}
