"""Tests for sk.nx: the NamedArray structure, nmap, operators, constructors, axis ops."""

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk

nx = sk.nx


def as_numpy(arr, order):
    """Values of `arr` with axes in `order` (positional axes as None, in order), read
    directly from the documented representation."""
    data = np.asarray(arr.data_array)
    full = (None,) * (data.ndim - len(arr.axis_names)) + tuple(arr.axis_names)
    positional = iter(d for d, n in enumerate(full) if n is None)
    perm = [next(positional) if n is None else full.index(n) for n in order]
    assert sorted(perm) == list(range(data.ndim)), (order, full)
    return np.transpose(data, perm)


def sample(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(dtype)


# ----------------------------------------------------------------- structure


def test_wrap_converts_python_and_numpy_values_to_jax_arrays():
    assert isinstance(nx.wrap([1, 2]).data_array, jax.Array)
    assert isinstance(nx.wrap(np.ones(2)).data_array, jax.Array)
    assert isinstance(nx.wrap(3.0).data_array, jax.Array)


def test_wrap_keeps_shape_dtype_structs():
    spec = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    arr = nx.wrap(spec, "a", "b")
    assert arr.data_array is spec
    assert arr.named_shape == {"a": 2, "b": 3}


def test_wrap_keeps_tracers_inside_jit():
    seen = []

    @jax.jit
    def f(x):
        arr = nx.wrap(x)
        seen.append(type(arr.data_array))
        return arr.unwrap()

    f(jnp.ones(2))
    assert issubclass(seen[0], jax.core.Tracer)


def test_wrap_refuses_namedarrays_and_non_arrays():
    with pytest.raises(TypeError, match="already a NamedArray"):
        nx.wrap(nx.ones({"a": 2}))
    with pytest.raises(TypeError, match="wrap expects an array"):
        nx.wrap("text")


def test_namedarray_method_wrap():
    assert nx.NamedArray.wrap(jnp.ones(2), "a").named_shape == {"a": 2}


def test_aliases_are_the_single_class():
    assert nx.NamedArrayBase is nx.NamedArray
    assert nx.NamedArrayView is nx.NamedArray


def test_constructor_drops_leading_positional_entries():
    arr = nx.NamedArray(jnp.zeros((2, 3, 4)), axis_names=(None, None, "c"))
    assert arr.axis_names == ("c",)


def test_constructor_refuses_too_many_names():
    with pytest.raises(ValueError, match="has only 1 dimensions"):
        nx.NamedArray(jnp.zeros(3), axis_names=("a", "b"))


def test_constructor_refuses_integer_and_repeated_names():
    with pytest.raises(ValueError, match="integers are not allowed"):
        nx.NamedArray(jnp.zeros(3), axis_names=(0,))
    with pytest.raises(ValueError, match="repeated axis names"):
        nx.NamedArray(jnp.zeros((2, 2)), axis_names=("a", "a"))


def test_shapes_of_an_interleaved_layout():
    arr = nx.NamedArray(jnp.zeros((2, 3, 4, 5)), axis_names=("a", None, "c"))
    assert arr.positional_shape == (2, 4)
    assert arr.named_shape == {"a": 3, "c": 5}
    assert arr.dtype == jnp.float32


def test_check_valid_accepts_valid_arrays():
    nx.wrap(jnp.zeros((2, 3)), "a", "b").check_valid()
    nx.NamedArray(jnp.zeros((2, 3)), ("a", None)).check_valid()


def test_check_valid_reports_rank_mismatch():
    bad = nx.NamedArray.from_attributes(data_array=jnp.zeros(2), axis_names=("a", "b"))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        bad.check_valid()


def test_check_valid_reports_repeated_and_integer_names():
    bad = nx.NamedArray.from_attributes(data_array=jnp.zeros((2, 2)), axis_names=("a", "a"))
    with pytest.raises(ValueError, match="repeated"):
        bad.check_valid()
    bad = nx.NamedArray.from_attributes(data_array=jnp.zeros(2), axis_names=(1,))
    with pytest.raises(ValueError, match="integers"):
        bad.check_valid()


def test_check_valid_reports_non_array_data():
    bad = nx.NamedArray.from_attributes(data_array="text", axis_names=())
    with pytest.raises(ValueError, match="must be an array"):
        bad.check_valid()


def test_tmp_pos_axis_markers_are_unique_names():
    first, second = nx.TmpPosAxisMarker(), nx.TmpPosAxisMarker()
    assert first != second
    arr = nx.wrap(jnp.zeros((2, 3))).tag(first, second)
    assert arr.named_shape == {first: 2, second: 3}


def test_flatten_exposes_data_as_only_child():
    arr = nx.wrap(jnp.zeros((2, 3)), "a", "b")
    ((path, leaf),) = jax.tree_util.tree_flatten_with_path(arr)[0]
    assert leaf is arr.data_array
    assert jax.tree_util.keystr(path) == ".data_array"


def test_axis_names_and_sizes_are_part_of_the_tree_structure():
    # As in penzai, whose `named_axes` (name -> size) is static metadata.
    a = jax.tree_util.tree_structure(nx.zeros({"a": 2, "b": 3}))
    b = jax.tree_util.tree_structure(nx.zeros({"a": 4, "b": 5}))
    c = jax.tree_util.tree_structure(nx.zeros({"b": 3, "a": 2}))
    assert a == jax.tree_util.tree_structure(nx.ones({"a": 2, "b": 3}))
    assert a != b
    assert a != c


def test_unflatten_accepts_any_leaf():
    arr = nx.zeros({"a": 2})
    replaced = jax.tree_util.tree_map(lambda _: "anything", arr)
    assert replaced.data_array == "anything"
    assert replaced.axis_names == ("a",)
    assert "anything" in repr(replaced)


def test_tree_map_stacking_adds_leading_positional_axes():
    arr = nx.wrap(jnp.arange(6.0).reshape(2, 3), "a", "b").untag("b")
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), arr, arr + 1)
    stacked.check_valid()
    assert stacked.positional_shape == (2, 3)
    assert stacked.named_shape == {"a": 2}
    np.testing.assert_array_equal(
        as_numpy(stacked, [None, None, "a"])[1], as_numpy(arr + 1, [None, "a"])
    )


def test_vmap_over_a_leading_positional_axis():
    values = sample((4, 2, 3))
    arr = nx.NamedArray(jnp.asarray(values), ("a", "b"))  # leading positional axis of 4
    result = jax.vmap(lambda x: x.untag("b").sum())(arr)
    result.check_valid()
    assert result.positional_shape == (4,)
    np.testing.assert_allclose(as_numpy(result, [None, "a"]), values.sum(axis=2), rtol=1e-5)


def test_vmap_over_a_named_leading_axis_raises_instead_of_relabelling():
    # Regression: jax.vmap slicing a *named* leading data dimension used to leave
    # a NamedArray whose names were silently shifted onto the wrong dimensions
    # (here named_shape reported {'a': 3, ...} for the b axis).
    arr = nx.wrap(jnp.asarray(sample((2, 3))), "a", "b")
    for read in (
        lambda x: x.named_shape,
        lambda x: x.positional_shape,
        lambda x: x.untag("b"),
        lambda x: nx.nmap(jnp.sum)(x),
        lambda x: x.canonicalize(),
    ):
        with pytest.raises(ValueError, match=r"untag_prefix\(name\)\.with_positional_prefix"):
            jax.vmap(read)(arr)


def test_vmap_over_an_interleaved_positional_axis_points_to_with_positional_prefix():
    # Regression: the positional axis of ('a', None) is data dim 1, so vmap
    # slices 'a' instead; this must be reported, not mislabelled.
    values = sample((3, 4))
    arr = nx.wrap(jnp.asarray(values), "a", "b").untag("b")
    assert arr.axis_names == ("a", None)
    with pytest.raises(ValueError, match=r"with_positional_prefix\(\)") as info:
        jax.vmap(lambda x: x.untag("a").sum())(arr)
    assert "('a', None)" in str(info.value)
    result = jax.vmap(lambda x: x.untag("a").sum())(arr.with_positional_prefix())
    np.testing.assert_allclose(as_numpy(result, [None]), values.sum(axis=0), rtol=1e-5)


def test_check_valid_explains_rank_mismatch_from_transformations():
    bad = nx.NamedArray.from_attributes(data_array=jnp.zeros(2), axis_names=("a", "b"))
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        bad.check_valid()


def test_namedarrays_are_unhashable_and_compare_elementwise():
    arr = nx.ones({"a": 2})
    with pytest.raises(TypeError):
        hash(arr)
    assert (arr == arr).dtype == jnp.bool_


def test_dataclasses_replace_validates():
    arr = nx.ones({"a": 2})
    with pytest.raises(ValueError, match="repeated"):
        dataclasses.replace(arr, axis_names=("a", "a"))


# ------------------------------------------------------------ tag and untag


def test_untag_in_data_order_does_not_move_data():
    arr = nx.wrap(jnp.zeros((2, 3, 4)), "a", "b", "c")
    untagged = arr.untag("a", "c")
    assert untagged.data_array is arr.data_array
    assert untagged.positional_shape == (2, 4)
    assert untagged.named_shape == {"b": 3}


def test_untag_in_another_order_orders_positional_axes():
    values = sample((2, 3, 4))
    arr = nx.wrap(values, "a", "b", "c").untag("c", "a")
    assert arr.positional_shape == (4, 2)
    np.testing.assert_array_equal(as_numpy(arr, [None, None, "b"]), values.transpose(2, 0, 1))


def test_untag_refuses_arrays_with_positional_axes():
    arr = nx.wrap(jnp.zeros((2, 3))).tag_prefix("a")
    with pytest.raises(ValueError, match=r"already has positional axes.*untag_prefix"):
        arr.untag("a")


def test_untag_reports_missing_names_with_the_named_shape():
    arr = nx.zeros({"a": 2})
    with pytest.raises(ValueError, match=r"\['zz'\].*\{'a': 2\}"):
        arr.untag("zz")


def test_untag_refuses_repeated_names():
    with pytest.raises(ValueError, match="repeated"):
        nx.zeros({"a": 2}).untag("a", "a")


def test_tag_needs_one_name_per_positional_axis():
    with pytest.raises(ValueError, match=r"1 name\(s\) for positional_shape \(2, 3\)"):
        nx.wrap(jnp.zeros((2, 3))).tag("a")


def test_tag_refuses_names_already_present():
    arr = nx.zeros({"a": 2, "b": 3}).untag("a")
    with pytest.raises(ValueError, match=r"repeated axis names \['b'\]"):
        arr.tag("b")


def test_tag_refuses_integers_and_none():
    with pytest.raises(ValueError, match="integers are not allowed"):
        nx.wrap(jnp.zeros(2)).tag(1)
    with pytest.raises(ValueError, match="None cannot be an axis name"):
        nx.wrap(jnp.zeros(2)).tag(None)


def test_tag_names_interleaved_positional_axes_in_order():
    arr = nx.NamedArray(jnp.zeros((2, 3, 4)), axis_names=(None, "b", None))
    tagged = arr.tag("x", "y")
    assert tagged.named_shape == {"x": 2, "b": 3, "y": 4}


def test_tag_prefix_and_untag_prefix():
    arr = nx.wrap(jnp.zeros((2, 3, 4))).tag_prefix("a")
    assert arr.named_shape == {"a": 2}
    assert arr.positional_shape == (3, 4)
    back = arr.untag_prefix("a")
    assert back.positional_shape == (2, 3, 4)
    assert not back.named_shape


def test_tag_prefix_refuses_too_many_names():
    with pytest.raises(ValueError, match="only 1 positional axes"):
        nx.wrap(jnp.zeros(2)).tag_prefix("a", "b")


def test_untag_prefix_puts_new_axes_first():
    values = sample((2, 3))
    arr = nx.wrap(values).tag_prefix("a")  # positional (3,), named a
    arr = arr.untag_prefix("a")
    np.testing.assert_array_equal(as_numpy(arr, [None, None]), values)
    arr2 = nx.wrap(values).tag("a", "b").untag("a").untag_prefix("b")
    np.testing.assert_array_equal(as_numpy(arr2, [None, None]), values.T)


def test_unwrap_with_names_orders_axes():
    values = sample((2, 3))
    np.testing.assert_array_equal(nx.wrap(values, "a", "b").unwrap("b", "a"), values.T)


def test_unwrap_lists_remaining_names():
    with pytest.raises(ValueError, match=r"still has named axes \{'a': 2\}"):
        nx.zeros({"a": 2}).unwrap()


def test_with_positional_prefix_moves_positional_axes_first():
    values = sample((2, 3, 4))
    arr = nx.wrap(values, "a", "b", "c").untag("b")
    moved = arr.with_positional_prefix()
    assert moved.data_array.shape == (3, 2, 4)
    assert moved.axis_names == ("a", "c")
    np.testing.assert_array_equal(
        as_numpy(moved, [None, "a", "c"]), as_numpy(arr, [None, "a", "c"])
    )


def test_with_positional_prefix_is_identity_when_canonical():
    arr = nx.zeros({"a": 2})
    assert arr.with_positional_prefix() is arr


def test_order_as_and_its_errors():
    values = sample((2, 3))
    arr = nx.wrap(values, "a", "b").order_as("b", "a")
    assert arr.axis_names == ("b", "a")
    np.testing.assert_array_equal(arr.data_array, values.T)
    with pytest.raises(ValueError, match="every axis name exactly once"):
        arr.order_as("a")


def test_order_like_matches_layout_and_checks_axes():
    values = sample((2, 3, 4))
    arr = nx.wrap(values, "a", "b", "c").untag("b")
    ref = nx.wrap(values.transpose(2, 1, 0), "c", "x", "a").untag("x")
    ordered = arr.order_like(ref)
    assert ordered.axis_names == ref.axis_names
    assert jax.tree_util.tree_structure(ordered) == jax.tree_util.tree_structure(ref)
    np.testing.assert_array_equal(
        as_numpy(ordered, [None, "a", "c"]), as_numpy(arr, [None, "a", "c"])
    )
    with pytest.raises(ValueError, match="different axes"):
        arr.order_like(nx.zeros({"a": 2}))


def test_canonicalize_sorts_names():
    arr = nx.zeros({"b": 3, "a": 2}).canonicalize()
    assert arr.axis_names == ("a", "b")


def test_canonicalize_handles_incomparable_names():
    arr = nx.wrap(jnp.zeros((2, 3)), ("t", 1), "s").canonicalize()
    assert set(arr.axis_names) == {("t", 1), "s"}


def test_broadcast_to_positional_and_named():
    values = sample((3,))
    arr = nx.wrap(values, "a").broadcast_to((2, 1), {"b": 4, "a": 3})
    assert arr.positional_shape == (2, 1)
    assert arr.named_shape == {"a": 3, "b": 4}
    np.testing.assert_array_equal(
        as_numpy(arr, [None, None, "a", "b"]),
        np.broadcast_to(values[None, None, :, None], (2, 1, 3, 4)),
    )


def test_broadcast_to_refuses_resizing_named_axes():
    with pytest.raises(ValueError, match="'a' has size 2, requested 3"):
        nx.zeros({"a": 2}).broadcast_to((), {"a": 3})


def test_broadcast_to_refuses_incompatible_positional_shapes():
    with pytest.raises(ValueError, match=r"\(3,\) cannot be broadcast to \(4,\)"):
        nx.wrap(jnp.zeros(3)).broadcast_to((4,))


def test_broadcast_like():
    arr = nx.ones({"a": 2}).broadcast_like(nx.wrap(jnp.zeros((5, 2, 3))).tag_prefix("x"))
    assert arr.positional_shape == (2, 3)
    assert arr.named_shape == {"a": 2, "x": 5}
    assert nx.wrap(1.0).broadcast_like(jnp.zeros(4)).positional_shape == (4,)


def test_as_namedarrayview_returns_the_same_array():
    arr = nx.zeros({"a": 2})
    assert arr.as_namedarrayview() is arr


# ---------------------------------------------------------------------- nmap


def test_nmap_gives_the_function_positional_slices():
    shapes = []
    values = sample((2, 3, 4))
    arr = nx.wrap(values, "a", "b", "c").untag("b")

    def f(x):
        shapes.append(x.shape)
        return jnp.sum(x)

    result = nx.nmap(f)(arr)
    assert shapes == [(3,)]
    assert result.named_shape == {"a": 2, "c": 4}
    np.testing.assert_allclose(as_numpy(result, ["a", "c"]), values.sum(axis=1), rtol=1e-6)


def test_nmap_iterates_same_names_together():
    x = sample((3, 4))
    y = sample((4, 3), seed=1)
    result = nx.nmap(lambda a, b: a * b)(nx.wrap(x, "i", "j"), nx.wrap(y, "j", "i"))
    np.testing.assert_allclose(as_numpy(result, ["i", "j"]), x * y.T, rtol=1e-6)


def test_nmap_output_names_follow_first_appearance():
    result = nx.nmap(lambda a, b: a + b)(nx.zeros({"b": 2, "a": 3}), nx.zeros({"c": 4, "a": 3}))
    assert list(result.named_shape) == ["b", "a", "c"]
    assert result.axis_names == ("b", "a", "c")


def test_nmap_outputs_keep_positional_axes_and_get_all_names():
    data = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    arr = nx.wrap(jnp.asarray(data), "a", "b").untag("b")
    out = nx.nmap(lambda x: (x, jnp.float32(1.0)))(arr)
    assert out[0].positional_shape == (3,)
    assert out[0].named_shape == {"a": 2}
    np.testing.assert_array_equal(np.asarray(out[0].tag("b").unwrap("a", "b")), data)
    assert out[1].named_shape == {"a": 2}
    assert out[1].positional_shape == ()


def test_nmap_reports_size_mismatch_with_argument_paths():
    f = nx.nmap(lambda x, y: x)
    with pytest.raises(ValueError) as info:
        f(nx.zeros({"a": 2, "b": 3}), y={"w": nx.zeros({"a": 5})})
    message = str(info.value)
    assert "['a']" in message
    assert "args[0]: named_shape {'a': 2, 'b': 3}" in message
    assert "kwargs['y']['w']: named_shape {'a': 5}" in message


def test_nmap_elementwise_fast_path_reports_size_mismatch():
    with pytest.raises(ValueError, match=r"(?s)nmap\(add\).*args\[1\]"):
        nx.nmap(jnp.add)(nx.zeros({"a": 2}), nx.zeros({"a": 3}))


def test_nmap_passes_non_array_arguments_through():
    out = nx.nmap(lambda x, how, n: jnp.sum(x) * n if how == "sum" else x)(
        nx.ones({"a": 2}).untag("a"), "sum", 3
    )
    assert float(out.unwrap()) == 6.0


def test_nmap_passes_plain_arrays_unmapped():
    out = nx.nmap(lambda x, w: x * w)(nx.ones({"a": 2}), jnp.arange(3.0))
    assert out.positional_shape == (3,)
    np.testing.assert_array_equal(
        as_numpy(out, [None, "a"]), np.tile(np.arange(3.0)[:, None], (1, 2))
    )


def test_nmap_without_named_axes_wraps_outputs():
    out = nx.nmap(jnp.sum)(jnp.arange(4.0))
    assert isinstance(out, nx.NamedArray)
    assert float(out.unwrap()) == 6.0


def test_nmap_psum_over_a_named_axis_equals_the_sum():
    values = sample((3, 4))
    out = nx.nmap(lambda x: jax.lax.psum(x, "b"))(nx.wrap(values, "a", "b"))
    expected = np.broadcast_to(values.sum(axis=1, keepdims=True), (3, 4))
    np.testing.assert_allclose(as_numpy(out, ["a", "b"]), expected, rtol=1e-5)


def test_nmap_axis_index_sees_the_named_axis():
    out = nx.nmap(lambda x: jax.lax.axis_index("a") + 0 * x)(nx.zeros({"a": 4}, jnp.int32))
    np.testing.assert_array_equal(as_numpy(out, ["a"]), np.arange(4))


def test_nmap_refuses_namedarray_outputs():
    with pytest.raises(TypeError, match="returned a NamedArray"):
        nx.nmap(lambda x: nx.wrap(x))(nx.zeros({"a": 2}))


def test_nmap_under_jit_and_grad():
    values = sample((2, 3))
    arr = nx.wrap(values, "a", "b")

    def loss(x):
        return nx.nmap(jnp.sum)((x * x).untag("a", "b")).unwrap()

    grad = jax.jit(jax.grad(loss))(arr)
    np.testing.assert_allclose(as_numpy(grad, ["a", "b"]), 2 * values, rtol=1e-6)


def test_jit_of_nmap_does_not_retrace_for_equal_structures():
    traces = []

    @jax.jit
    def f(a, b):
        traces.append(1)
        return nx.nmap(jnp.add)(a, b)

    a, b = nx.zeros({"a": 2}), nx.ones({"a": 2})
    f(a, b)
    f(b, a)
    assert len(traces) == 1


def test_nmap_where_fast_path_matches_numpy():
    cond = np.array([True, False, True])
    x, y = sample((3, 2)), sample((2,), seed=1)
    out = nx.nmap(jnp.where)(nx.wrap(cond, "i"), nx.wrap(x, "i", "j"), nx.wrap(y, "j"))
    np.testing.assert_array_equal(as_numpy(out, ["i", "j"]), np.where(cond[:, None], x, y[None]))


def test_nmap_unary_function_keeps_layout():
    arr = nx.NamedArray(jnp.asarray(sample((2, 3, 4))), ("a", None, "c"))
    out = nx.nmap(jnp.exp)(arr)
    np.testing.assert_allclose(
        as_numpy(out, ["a", None, "c"]), np.exp(as_numpy(arr, ["a", None, "c"])), rtol=1e-6
    )


def test_nmap_keeps_the_function_name():
    assert nx.nmap(jnp.sum).__name__ == "sum"


# ----------------------------------------------------------------- operators


def test_binary_operators_broadcast_by_name():
    x, y = sample((2, 3)), sample((3, 4), seed=1)
    a, b = nx.wrap(x, "i", "j"), nx.wrap(y, "j", "k")
    out = a - b
    np.testing.assert_allclose(
        as_numpy(out, ["i", "j", "k"]), x[:, :, None] - y[None, :, :], rtol=1e-6
    )


@pytest.mark.parametrize(
    ("op", "np_op"),
    [
        (lambda a, b: a + b, np.add),
        (lambda a, b: a - b, np.subtract),
        (lambda a, b: a * b, np.multiply),
        (lambda a, b: a / b, np.true_divide),
        (lambda a, b: a // b, np.floor_divide),
        (lambda a, b: a % b, np.mod),
        (lambda a, b: a**b, np.power),
        (lambda a, b: a < b, np.less),
        (lambda a, b: a <= b, np.less_equal),
        (lambda a, b: a > b, np.greater),
        (lambda a, b: a >= b, np.greater_equal),
        (lambda a, b: a == b, np.equal),
        (lambda a, b: a != b, np.not_equal),
    ],
)
def test_arithmetic_and_comparison_operators(op, np_op):
    x = np.abs(sample((2, 3))) + 0.5
    y = np.abs(sample((3,), seed=1)) + 0.5
    out = op(nx.wrap(x, "i", "j"), nx.wrap(y, "j"))
    np.testing.assert_allclose(as_numpy(out, ["i", "j"]), np_op(x, y[None]), rtol=1e-5)


@pytest.mark.parametrize(
    ("op", "np_op"),
    [
        (lambda a, b: a & b, np.bitwise_and),
        (lambda a, b: a | b, np.bitwise_or),
        (lambda a, b: a ^ b, np.bitwise_xor),
        (lambda a, b: a << b, np.left_shift),
        (lambda a, b: a >> b, np.right_shift),
    ],
)
def test_bitwise_operators(op, np_op):
    x = np.array([[1, 6, 12], [3, 5, 7]], np.int32)
    y = np.array([1, 2, 3], np.int32)
    out = op(nx.wrap(x, "i", "j"), nx.wrap(y, "j"))
    np.testing.assert_array_equal(as_numpy(out, ["i", "j"]), np_op(x, y[None]))


def test_reflected_operators_with_scalars_and_arrays():
    x = sample((3,))
    a = nx.wrap(x, "i")
    np.testing.assert_allclose(as_numpy(2.0 - a, ["i"]), 2.0 - x, rtol=1e-6)
    np.testing.assert_allclose(as_numpy(2.0 / a, ["i"]), 2.0 / x, rtol=1e-6)
    np.testing.assert_allclose(as_numpy(2.0**a, ["i"]), 2.0**x, rtol=1e-5)
    out = np.arange(4.0) + a
    assert isinstance(out, nx.NamedArray)
    np.testing.assert_allclose(as_numpy(out, [None, "i"]), np.arange(4.0)[:, None] + x, rtol=1e-6)
    out = jnp.arange(4.0) * a
    assert isinstance(out, nx.NamedArray)
    assert out.positional_shape == (4,)


def test_plain_arrays_broadcast_as_positional_axes():
    a = nx.wrap(jnp.zeros((2, 3))).tag_prefix("n")  # positional (3,)
    out = a + jnp.arange(6.0).reshape(2, 3)
    assert out.positional_shape == (2, 3)
    assert out.named_shape == {"n": 2}


def test_unary_operators():
    x = np.array([-1.5, 2.0], np.float32)
    a = nx.wrap(x, "i")
    np.testing.assert_array_equal(as_numpy(-a, ["i"]), -x)
    np.testing.assert_array_equal(as_numpy(+a, ["i"]), x)
    np.testing.assert_array_equal(as_numpy(abs(a), ["i"]), np.abs(x))
    np.testing.assert_array_equal(
        as_numpy(~nx.wrap(np.array([1, 2]), "i"), ["i"]), ~np.array([1, 2])
    )


def test_matmul_acts_on_positional_axes():
    x, y = sample((2, 3, 4)), sample((4, 5), seed=1)
    out = nx.wrap(x).tag_prefix("b") @ y
    np.testing.assert_allclose(
        as_numpy(out, [None, None, "b"]), np.einsum("bij,jk->ikb", x, y), rtol=1e-5
    )


def test_divmod_returns_a_pair():
    quotient, remainder = divmod(nx.wrap(np.array([7, 8]), "i"), 3)
    np.testing.assert_array_equal(as_numpy(quotient, ["i"]), [2, 2])
    np.testing.assert_array_equal(as_numpy(remainder, ["i"]), [1, 2])


def test_operators_with_unsupported_types_return_not_implemented():
    with pytest.raises(TypeError):
        nx.ones({"a": 2}) + "text"


# ------------------------------------------------------------ lifted methods


def test_reductions_act_on_positional_axes_only():
    values = sample((2, 3, 4))
    arr = nx.wrap(values, "a", "b", "c").untag("b")
    np.testing.assert_allclose(as_numpy(arr.sum(), ["a", "c"]), values.sum(1), rtol=1e-5)
    np.testing.assert_allclose(as_numpy(arr.max(), ["a", "c"]), values.max(1))
    np.testing.assert_allclose(as_numpy(arr.std(), ["a", "c"]), values.std(1), rtol=1e-5)
    np.testing.assert_array_equal(as_numpy(arr.argmax(), ["a", "c"]), values.argmax(1))


def test_methods_take_arguments_and_namedarray_arguments():
    values = sample((2, 3))
    arr = nx.wrap(values).tag_prefix("a")
    np.testing.assert_allclose(
        as_numpy(arr.clip(-0.5, 0.5), [None, "a"]), np.clip(values, -0.5, 0.5).T
    )
    idx = nx.wrap(np.array([2, 0]), "a")
    np.testing.assert_array_equal(as_numpy(arr.take(idx), ["a"]), values[[0, 1], [2, 0]])


def test_shape_methods():
    arr = nx.wrap(jnp.zeros((2, 3, 4))).tag_prefix("a")
    assert arr.reshape(12).positional_shape == (12,)
    assert arr.flatten().positional_shape == (12,)
    assert arr.T.positional_shape == (4, 3)
    assert arr.mT.positional_shape == (4, 3)
    assert arr.transpose(1, 0).positional_shape == (4, 3)
    assert arr.swapaxes(0, 1).positional_shape == (4, 3)
    assert arr[None].squeeze(0).positional_shape == (3, 4)


def test_real_imag_and_conj():
    arr = nx.wrap(jnp.array([1 + 2j, 3 - 1j]), "i")
    np.testing.assert_array_equal(as_numpy(arr.real, ["i"]), [1, 3])
    np.testing.assert_array_equal(as_numpy(arr.imag, ["i"]), [2, -1])
    np.testing.assert_array_equal(as_numpy(arr.conj(), ["i"]), [1 - 2j, 3 + 1j])


def test_astype_keeps_layout():
    arr = nx.NamedArray(jnp.zeros((2, 3)), ("a", None))
    converted = arr.astype(jnp.int32)
    assert converted.dtype == jnp.int32
    assert converted.axis_names == arr.axis_names


def test_item_and_its_error():
    assert nx.wrap(jnp.array([5])).item() == 5
    with pytest.raises(ValueError, match=r"named axes \{'a': 1\}"):
        nx.ones({"a": 1}).item()


def test_iteration_over_the_first_positional_axis():
    values = np.arange(6).reshape(2, 3)
    rows = list(nx.wrap(values).tag_prefix("a"))
    assert len(rows) == 3
    assert rows[1].named_shape == {"a": 2}
    assert rows[1].positional_shape == ()
    np.testing.assert_array_equal(as_numpy(rows[1], ["a"]), values[:, 1])


def test_iteration_needs_a_positional_axis():
    with pytest.raises(TypeError, match="no positional axes"):
        list(nx.zeros({"a": 2}))


def test_scalar_conversions():
    scalar = nx.wrap(jnp.array(3))
    assert int(scalar) == 3
    assert float(scalar) == 3.0
    assert complex(scalar) == 3
    assert bool(scalar)
    assert [10, 20, 30, 40][scalar] == 40
    with pytest.raises(TypeError, match=r"named_shape \{'a': 1\}"):
        float(nx.ones({"a": 1}))
    with pytest.raises(TypeError, match=r"positional_shape \(1,\)"):
        bool(nx.wrap(jnp.ones(1)))


def test_jnp_functions_refuse_namedarrays():
    with pytest.raises(TypeError):
        jnp.sum(nx.ones({"a": 2}))


def test_implicit_numpy_conversion_is_refused():
    with pytest.raises(TypeError, match=r"unwrap\(\*names\)"):
        np.asarray(nx.ones({"a": 2}))
    with pytest.raises(TypeError, match="does not support ufuncs"):
        np.add(nx.ones({"a": 2}), 1)


# -------------------------------------------------------------------- repr


def test_repr_shows_summary_and_small_values():
    text = repr(nx.wrap(jnp.arange(3.0)).tag_prefix("x"))
    assert text == "NamedArray(float32(| x:3), [0., 1., 2.])"
    text = repr(nx.wrap(jnp.zeros((2, 3)), "a", "b").untag("b"))
    assert text.startswith("NamedArray(float32(3 | a:2), ")


def test_repr_of_large_abstract_and_traced_arrays():
    assert repr(nx.zeros({"seq": 8, "heads": 4})) == "NamedArray(float32(| seq:8, heads:4))"
    spec = nx.wrap(jax.ShapeDtypeStruct((3, 2), jnp.int8)).tag_prefix("a")
    assert repr(spec) == "NamedArray(int8(2 | a:3))"
    texts = []
    jax.jit(lambda x: texts.append(repr(x)) or x)(nx.ones({"a": 2}))
    assert texts == ["NamedArray(float32(| a:2))"]


# -------------------------------------------------------------- constructors


def test_full_zeros_ones_arange():
    np.testing.assert_array_equal(as_numpy(nx.full({"a": 2, "b": 1}, 7), ["a", "b"]), [[7], [7]])
    assert nx.zeros([("b", 2), ("a", 3)]).axis_names == ("b", "a")
    assert nx.ones({"a": 2}, dtype=jnp.int32).dtype == jnp.int32
    assert nx.full({"a": 1}, 1.5, dtype=jnp.float16).dtype == jnp.float16
    np.testing.assert_array_equal(as_numpy(nx.arange("i", 2, 8, 2), ["i"]), [2, 4, 6])
    assert nx.arange("i", 3, dtype=jnp.float32).dtype == jnp.float32


def test_constructor_errors():
    with pytest.raises(ValueError, match="fill_value must be a scalar"):
        nx.full({"a": 3}, jnp.ones(3))
    with pytest.raises(ValueError, match="integers are not allowed"):
        nx.zeros({0: 3})
    with pytest.raises(ValueError, match="sizes must be ints"):
        nx.zeros({"a": -1})
    with pytest.raises(TypeError, match="named_shape must be a mapping"):
        nx.zeros(3)


def test_random_split_matches_jax_split_in_sorted_order():
    key = jax.random.key(0)
    keys = nx.random_split(key, {"b": 3, "a": 2})
    assert keys.axis_names == ("a", "b")
    expected = jax.random.key_data(jax.random.split(key, 6)).reshape(2, 3, 2)
    np.testing.assert_array_equal(jax.random.key_data(keys.unwrap("a", "b")), expected)


def test_random_split_keeps_order_of_pairs_and_ordered_dicts():
    key = jax.random.key(0)
    assert nx.random_split(key, [("b", 3), ("a", 2)]).axis_names == ("b", "a")
    ordered = collections.OrderedDict([("b", 3), ("a", 2)])
    assert nx.random_split(key, ordered).axis_names == ("b", "a")


def test_random_split_of_named_keys_and_raw_keys():
    keys = nx.random_split(nx.random_split(jax.random.key(1), {"x": 4}), {"b": 3})
    assert keys.named_shape == {"x": 4, "b": 3}
    raw = nx.random_split(jax.random.PRNGKey(0), {"b": 3})
    assert raw.named_shape == {"b": 3}
    assert raw.positional_shape == (2,)
    samples = nx.nmap(jax.random.normal)(keys, shape=(2,))
    assert samples.positional_shape == (2,)
    assert samples.named_shape == {"x": 4, "b": 3}


# ----------------------------------------------------------------- axis ops


def test_stack_adds_a_named_axis():
    x, y = sample((2, 3)), sample((2, 3), seed=1)
    out = nx.stack([nx.wrap(x, "a", "b"), nx.wrap(y.T, "b", "a")], "s")
    np.testing.assert_array_equal(as_numpy(out, ["s", "a", "b"]), np.stack([x, y]))


def test_stack_refuses_existing_names():
    with pytest.raises(ValueError, match=r"already have an axis 'a'"):
        nx.stack([nx.zeros({"a": 2})], "a")


def test_concatenate_joins_along_a_named_axis():
    x, y = sample((2, 3)), sample((2, 4), seed=1)
    out = nx.concatenate([nx.wrap(x, "a", "b"), nx.wrap(y.T, "b", "a")], "b")
    np.testing.assert_array_equal(as_numpy(out, ["a", "b"]), np.concatenate([x, y], axis=1))


def test_concatenate_broadcasts_missing_names():
    out = nx.concatenate([nx.zeros({"a": 2, "b": 3}), nx.ones({"b": 1})], "b")
    assert out.named_shape == {"a": 2, "b": 4}
    np.testing.assert_array_equal(as_numpy(out, ["a", "b"])[:, 3], [1, 1])


def test_concatenate_requires_the_axis():
    with pytest.raises(ValueError, match=r"arrays \[1\] have no axis 'b'"):
        nx.concatenate([nx.zeros({"b": 2}), nx.zeros({"a": 2})], "b")


def test_unstack_splits_along_a_named_axis():
    values = sample((2, 3))
    parts = nx.unstack(nx.wrap(values, "a", "b"), "b")
    assert len(parts) == 3
    np.testing.assert_array_equal(as_numpy(parts[2], ["a"]), values[:, 2])
    with pytest.raises(ValueError, match="not present"):
        nx.unstack(nx.zeros({"a": 2}), "b")


def test_order_like_on_trees():
    tree = {"x": nx.zeros({"a": 2, "b": 3}), "y": 1}
    ref = {"x": nx.zeros({"b": 3, "a": 2}), "y": 2}
    out = nx.order_like(tree, ref)
    assert out["x"].axis_names == ("b", "a")
    assert out["y"] == 1
    with pytest.raises(TypeError, match="expected a NamedArray"):
        nx.order_like({"x": nx.zeros({"a": 2})}, {"x": 3})


def test_scan_over_a_named_axis():
    values = sample((3, 4))
    xs = nx.wrap(values, "t", "c")
    final, ys = nx.scan(lambda c, x: (c + x, c * 2), "t", nx.zeros({"c": 4}), xs)
    np.testing.assert_allclose(as_numpy(final, ["c"]), values.sum(0), rtol=1e-5)
    expected = np.concatenate([np.zeros((1, 4)), np.cumsum(values, 0)[:-1]]) * 2
    np.testing.assert_allclose(as_numpy(ys, ["t", "c"]), expected, rtol=1e-5, atol=1e-6)


def test_scan_reorders_the_carry_and_tags_plain_outputs():
    xs = nx.zeros({"t": 3, "a": 2, "b": 4})
    init = nx.zeros({"a": 2, "b": 4})

    def step(carry, x):
        return (carry + x).order_as("b", "a"), jnp.ones(5)

    final, ys = nx.scan(step, "t", init, xs)
    assert final.axis_names == ("a", "b")
    assert ys.named_shape == {"t": 3}
    assert ys.positional_shape == (5,)


def test_scan_requires_the_axis_in_every_named_input():
    with pytest.raises(ValueError, match=r"no axis 't'"):
        nx.scan(lambda c, x: (c, x), "t", nx.wrap(0.0), nx.zeros({"a": 2}))


# ------------------------------------------------------ compiled eager calls


def test_nmap_of_jax_functions_reuses_one_compiled_call():
    from saikei.core.named_axes import _nmap

    x = nx.wrap(sample((2, 3, 4)), "a", "b", "c")
    nx.nmap(jnp.cumsum)(x.untag("c"), axis=0)
    before = _nmap._jitted_call._cache_size()
    out = nx.nmap(jnp.cumsum)(x.untag("c"), axis=0)
    assert _nmap._jitted_call._cache_size() == before
    np.testing.assert_allclose(
        as_numpy(out, [None, "a", "b"]),
        np.moveaxis(np.cumsum(as_numpy(x, ["a", "b", "c"]), 2), 2, 0),
        rtol=1e-5,
    )


def test_nmap_of_a_jax_function_needing_concrete_values_falls_back_to_eager():
    x = nx.wrap(np.arange(6.0).reshape(2, 3), "a", "b").untag("b")
    out = nx.nmap(jnp.repeat)(x, np.array([1, 0, 2]))
    assert out.positional_shape == (3,)
    np.testing.assert_array_equal(as_numpy(out, [None, "a"]), [[0, 3], [2, 5], [2, 5]])


def test_nmap_of_a_jax_function_with_many_static_variants_stays_correct():
    x = nx.wrap(sample((5, 3)), "a", "b").untag("a")
    for shift in range(20):
        out = nx.nmap(jnp.roll)(x, shift)
        np.testing.assert_array_equal(
            as_numpy(out, [None, "b"]), np.roll(as_numpy(x, [None, "b"]), shift, axis=0)
        )


def test_nmap_inside_jit_is_traced_inline():
    x = nx.zeros({"a": 2, "b": 3})
    jaxpr = jax.make_jaxpr(lambda x: nx.nmap(jnp.sum)(x.untag("b")))(x)
    assert "_jitted_call" not in str(jaxpr)


def test_nmap_float_arguments_are_values_not_static():
    from saikei.core.named_axes import _nmap

    x = nx.ones({"a": 2}).untag("a")
    nx.nmap(jnp.clip)(x, 0.0, 0.5)
    before = _nmap._jitted_call._cache_size()
    out = nx.nmap(jnp.clip)(x, 0.0, 0.25)
    assert _nmap._jitted_call._cache_size() == before
    np.testing.assert_array_equal(as_numpy(out, [None]), [0.25, 0.25])
