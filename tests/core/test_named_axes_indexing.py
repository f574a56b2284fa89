"""Tests for indexing NamedArrays: positional, by name, and `.at[...]` updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk

nx = sk.nx


def as_numpy(arr, order):
    """Values of `arr` with axes in `order` (None = next positional axis), read from
    the documented representation (`axis_names` aligned with trailing data dims)."""
    data = np.asarray(arr.data_array)
    full = (None,) * (data.ndim - len(arr.axis_names)) + tuple(arr.axis_names)
    positional = iter(d for d, n in enumerate(full) if n is None)
    perm = [next(positional) if n is None else full.index(n) for n in order]
    assert sorted(perm) == list(range(data.ndim)), (order, full)
    return np.transpose(data, perm)


VALUES = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)


def abc():
    return nx.wrap(VALUES, "a", "b", "c")


# ------------------------------------------------------------------ positional


@pytest.mark.parametrize(
    "index",
    [
        1,
        -1,
        slice(1, None),
        slice(None, None, 2),
        slice(None, None, -1),
        (None,),
        (Ellipsis, 0),
        (0, None),
        np.array([0, 2, 2, 1]),
        jnp.array([[0, 1], [2, 2]]),
        np.array([True, False, True]),
        (),
    ],
)
def test_positional_indexing_agrees_with_numpy(index):
    arr = abc().untag("b")  # positional (3,), named a, c
    out = arr[index]
    # Oracle: index every positional slice separately.
    per_slice = np.stack([np.stack([VALUES[a, :, c][index] for c in range(4)]) for a in range(2)])
    expected = np.moveaxis(per_slice, (0, 1), (-2, -1))
    npos = len(out.positional_shape)
    assert out.named_shape == {"a": 2, "c": 4}
    np.testing.assert_array_equal(as_numpy(out, [None] * npos + ["a", "c"]), expected)


def test_positional_indexing_of_an_interleaved_layout():
    arr = nx.NamedArray(jnp.asarray(VALUES), ("a", None, "c")).untag_prefix("a")
    assert arr.positional_shape == (2, 3)
    out = arr[1, 2]
    np.testing.assert_array_equal(as_numpy(out, ["c"]), VALUES[1, 2, :])


def test_positional_indexing_refuses_too_many_indices():
    with pytest.raises(IndexError, match=r"positional_shape \(3,\).*named_shape"):
        abc().untag("b")[0, 0]


def test_positional_static_index_out_of_bounds():
    with pytest.raises(IndexError, match="out of bounds"):
        abc().untag("b")[3]


def test_positional_namedarray_index_vectorizes():
    idx = nx.wrap(np.array([0, 2]), "k")
    out = abc().untag("b")[idx]
    assert out.named_shape == {"a": 2, "c": 4, "k": 2}
    np.testing.assert_array_equal(
        as_numpy(out, ["a", "c", "k"]), VALUES[:, [0, 2], :].transpose(0, 2, 1)
    )


def test_positional_namedarray_index_sharing_a_name_is_iterated_jointly():
    idx = nx.wrap(np.array([2, 0]), "a")
    out = abc().untag("b")[idx]
    assert out.named_shape == {"a": 2, "c": 4}
    np.testing.assert_array_equal(as_numpy(out, ["a", "c"]), np.stack([VALUES[0, 2], VALUES[1, 0]]))


# ---------------------------------------------------------------- dict index


def test_dict_int_removes_the_axis():
    out = abc()[{"b": 1}]
    assert out.named_shape == {"a": 2, "c": 4}
    np.testing.assert_array_equal(as_numpy(out, ["a", "c"]), VALUES[:, 1])


def test_dict_negative_int():
    np.testing.assert_array_equal(as_numpy(abc()[{"c": -1}], ["a", "b"]), VALUES[:, :, -1])


def test_dict_int_out_of_bounds_raises():
    with pytest.raises(IndexError, match=r"index 5 is out of bounds.*size 2"):
        abc()[{"a": 5}]


def test_dict_slice_keeps_the_axis():
    out = abc()[{"b": sk.slice[1:3], "c": sk.slice[::2]}]
    assert out.named_shape == {"a": 2, "b": 2, "c": 2}
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), VALUES[:, 1:3, ::2])


def test_dict_slice_with_negative_step():
    out = abc()[{"c": sk.slice[::-1]}]
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), VALUES[:, :, ::-1])


def test_dict_none_adds_a_size_one_axis():
    out = abc()[{"z": None, "a": 0}]
    assert out.named_shape == {"b": 3, "c": 4, "z": 1}


def test_dict_none_refuses_existing_names():
    with pytest.raises(ValueError, match="'a' already exists"):
        abc()[{"a": None}]


def test_dict_int_array_becomes_positional_axes():
    idx = np.array([[0, 2], [2, 1]])
    out = abc()[{"b": idx}]
    assert out.positional_shape == (2, 2)
    assert out.named_shape == {"a": 2, "c": 4}
    np.testing.assert_array_equal(
        as_numpy(out, [None, None, "a", "c"]), VALUES[:, idx, :].transpose(1, 2, 0, 3)
    )


def test_dict_index_arrays_follow_jax_semantics_for_negatives_and_clamping():
    idx = jnp.array([-1, 7, 0])
    out = abc()[{"c": idx}]
    np.testing.assert_array_equal(
        as_numpy(out, [None, "a", "b"]), np.moveaxis(VALUES[:, :, [3, 3, 0]], 2, 0)
    )


def test_dict_two_arrays_broadcast_together():
    out = abc()[{"b": np.array([0, 2]), "c": np.array([1, 3])}]
    assert out.positional_shape == (2,)
    np.testing.assert_array_equal(as_numpy(out, [None, "a"]), VALUES[:, [0, 2], [1, 3]].T)


def test_dict_int_and_array_together():
    out = abc()[{"a": 1, "c": np.array([3, 0])}]
    assert out.positional_shape == (2,)
    np.testing.assert_array_equal(as_numpy(out, [None, "b"]), VALUES[1][:, [3, 0]].T)


def test_dict_array_index_puts_new_axes_before_existing_positional_axes():
    arr = abc().untag("a")  # positional (2,)
    out = arr[{"c": np.array([0, 1, 3])}]
    assert out.positional_shape == (3, 2)
    np.testing.assert_array_equal(
        as_numpy(out, [None, None, "b"]), VALUES[:, :, [0, 1, 3]].transpose(2, 0, 1)
    )


def test_dict_namedarray_index_introduces_its_names():
    idx = nx.wrap(np.array([0, 2]), "k")
    out = abc()[{"b": idx}]
    assert out.named_shape == {"a": 2, "c": 4, "k": 2}
    np.testing.assert_array_equal(as_numpy(out, ["a", "k", "c"]), VALUES[:, [0, 2], :])


def test_dict_namedarray_index_with_a_shared_name():
    idx = nx.wrap(np.array([2, 0]), "a")
    out = abc()[{"b": idx}]
    np.testing.assert_array_equal(as_numpy(out, ["a", "c"]), np.stack([VALUES[0, 2], VALUES[1, 0]]))


def test_dict_namedarray_index_mixed_with_slices_and_positional_axes():
    arr = abc().untag("a")
    idx = nx.wrap(np.array([1, 0, 2]), "k")
    out = arr[{"b": idx, "c": sk.slice[1:3]}]
    assert out.positional_shape == (2,)
    assert out.named_shape == {"k": 3, "c": 2}
    np.testing.assert_array_equal(as_numpy(out, [None, "k", "c"]), VALUES[:, [1, 0, 2], 1:3])


def test_dict_index_on_vocabulary_matches_untag_then_positional_index():
    log_probs = nx.wrap(np.log(np.arange(1.0, 13.0).reshape(3, 4)), "seq", "vocabulary")
    tokens = nx.wrap(np.array([3, 0, 1]), "seq")
    by_name = log_probs[{"vocabulary": tokens}]
    positional = log_probs.untag("vocabulary")[tokens]
    np.testing.assert_array_equal(as_numpy(by_name, ["seq"]), as_numpy(positional, ["seq"]))


def test_dict_index_reports_missing_names():
    with pytest.raises(ValueError, match=r"\['zz'\] are not present.*'a': 2"):
        abc()[{"zz": 1}]


def test_dict_index_refuses_boolean_masks():
    with pytest.raises(IndexError, match="boolean index for axis 'a'"):
        abc()[{"a": np.array([True, False])}]


def test_dict_index_refuses_float_arrays():
    with pytest.raises(IndexError, match="integer dtype"):
        abc()[{"a": np.array([0.0, 1.0])}]


def test_dict_index_accepts_lists():
    out = abc()[{"b": [0, 2]}]
    np.testing.assert_array_equal(
        as_numpy(out, [None, "a", "c"]), VALUES[:, [0, 2]].transpose(1, 0, 2)
    )


# --------------------------------------------------- slices with jax scalar bounds


def test_slice_with_a_concrete_jax_scalar_bound():
    out = abc()[{"b": sk.slice[: jnp.array(2)]}]
    assert out.named_shape == {"a": 2, "b": 2, "c": 4}


def test_slice_with_a_closed_over_concrete_bound_inside_jit():
    stop = jnp.array(2)

    @jax.jit
    def f(x):
        return x[{"b": sk.slice[1:stop]}]

    out = f(abc())
    assert out.named_shape == {"a": 2, "b": 1, "c": 4}
    out = f(abc())  # the second call must hit the cache, not hang or retrace forever
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), VALUES[:, 1:2])


def test_slice_with_a_traced_bound_gives_a_clear_error():
    @jax.jit
    def f(x, stop):
        return x[{"b": sk.slice[:stop]}]

    with pytest.raises(IndexError, match="traced value"):
        f(abc(), 2)


def test_slice_with_a_non_integer_bound():
    with pytest.raises(IndexError, match="must be integers"):
        abc()[{"b": sk.slice[:1.5]}]


# ------------------------------------------------------------------------- at


def test_at_get_matches_getitem():
    np.testing.assert_array_equal(as_numpy(abc().at[{"b": 1}].get(), ["a", "c"]), VALUES[:, 1])
    np.testing.assert_array_equal(as_numpy(abc().untag("b").at[2].get(), ["a", "c"]), VALUES[:, 2])


def test_at_get_passes_options():
    out = abc().untag("b").at[5].get(mode="fill", fill_value=-1.0)
    np.testing.assert_array_equal(as_numpy(out, ["a", "c"]), -np.ones((2, 4)))
    out = abc().at[{"b": np.array([0, 5])}].get(mode="fill", fill_value=-1.0)
    np.testing.assert_array_equal(as_numpy(out, [None, "a", "c"])[1], -np.ones((2, 4)))


def test_at_set_positional():
    out = abc().untag("b").at[1].set(0.0)
    expected = VALUES.copy()
    expected[:, 1] = 0
    np.testing.assert_array_equal(as_numpy(out, ["a", None, "c"]), expected)


def test_at_set_by_name_with_named_values():
    values = np.arange(4.0, dtype=np.float32) * 100
    out = abc().at[{"b": 1}].set(nx.wrap(values, "c"))
    expected = VALUES.copy()
    expected[:, 1, :] = values
    assert out.named_shape == {"a": 2, "b": 3, "c": 4}
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), expected)


def test_at_add_on_a_slice_with_values_named_like_the_slice():
    values = np.array([10.0, 20.0], np.float32)
    out = abc().at[{"b": sk.slice[0:2]}].add(nx.wrap(values, "b"))
    expected = VALUES.copy()
    expected[:, 0:2, :] += values[None, :, None]
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), expected)


def test_at_update_with_repeated_array_indices_accumulates():
    out = abc().at[{"b": np.array([0, 0])}].add(1.0)
    expected = VALUES.copy()
    expected[:, 0, :] += 2
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), expected)


def test_at_update_with_positional_values_for_array_indices():
    values = np.array([1.0, 2.0], np.float32)  # one value per index position
    out = abc().at[{"b": np.array([0, 2])}].set(values)
    expected = VALUES.copy()
    expected[:, [0, 2], :] = values[None, :, None]
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), expected)


def test_at_update_keeps_existing_positional_axes():
    arr = abc().untag("a")
    out = arr.at[{"c": 3}].set(nx.wrap(np.array([5.0, 6.0], np.float32)))
    assert out.positional_shape == (2,)
    expected = VALUES.copy()
    expected[:, :, 3] = np.array([5.0, 6.0])[:, None]
    np.testing.assert_array_equal(as_numpy(out, [None, "b", "c"]), expected)


@pytest.mark.parametrize(
    ("method", "np_update"),
    [
        ("add", lambda x, v: x + v),
        ("multiply", lambda x, v: x * v),
        ("mul", lambda x, v: x * v),
        ("divide", lambda x, v: x / v),
        ("div", lambda x, v: x / v),
        ("power", lambda x, v: x**v),
        ("min", np.minimum),
        ("max", np.maximum),
    ],
)
def test_at_update_methods(method, np_update):
    out = getattr(abc().at[{"c": sk.slice[1:3]}], method)(2.0)
    expected = VALUES.copy()
    expected[:, :, 1:3] = np_update(expected[:, :, 1:3], 2.0)
    np.testing.assert_allclose(as_numpy(out, ["a", "b", "c"]), expected, rtol=1e-6)


def test_at_apply():
    out = abc().untag("b").at[0].apply(lambda x: x * 10)
    expected = VALUES.copy()
    expected[:, 0] *= 10
    np.testing.assert_array_equal(as_numpy(out, ["a", None, "c"]), expected)
    out = abc().at[{"a": 1}].apply(jnp.negative)
    expected = VALUES.copy()
    expected[1] *= -1
    np.testing.assert_array_equal(as_numpy(out, ["a", "b", "c"]), expected)


def test_at_values_with_new_names_broadcast_the_result():
    out = abc().at[{"a": 0}].set(nx.wrap(np.array([1.0, 2.0], np.float32), "k"))
    assert out.named_shape == {"a": 2, "b": 3, "c": 4, "k": 2}
    np.testing.assert_array_equal(as_numpy(out, ["k", "a", "b", "c"])[1, 0], np.full((3, 4), 2.0))
    np.testing.assert_array_equal(as_numpy(out, ["k", "a", "b", "c"])[0, 1], VALUES[1])


def test_at_with_a_namedarray_index_vectorizes_the_update():
    idx = nx.wrap(np.array([0, 2]), "k")
    out = abc().at[{"b": idx}].set(-1.0)
    assert out.named_shape == {"a": 2, "b": 3, "c": 4, "k": 2}
    per_k = as_numpy(out, ["k", "a", "b", "c"])
    assert (per_k[0, :, 0] == -1).all() and (per_k[0, :, 2] == VALUES[:, 2]).all()
    assert (per_k[1, :, 2] == -1).all() and (per_k[1, :, 0] == VALUES[:, 0]).all()


def test_at_refuses_values_named_like_an_integer_indexed_axis():
    with pytest.raises(ValueError, match=r"named axes \['b'\]"):
        abc().at[{"b": 0}].set(nx.ones({"b": 3}))


def test_at_refuses_values_with_the_wrong_slice_size():
    with pytest.raises(ValueError, match=r"\{'b': 3\} but the sliced sizes are \{'b': 2\}"):
        abc().at[{"b": sk.slice[:2]}].set(nx.ones({"b": 3}))


def test_at_refuses_new_axes():
    with pytest.raises(ValueError, match="cannot be updated"):
        abc().at[{"z": None}].set(0.0)


def test_at_refuses_an_index_named_like_its_axis():
    with pytest.raises(ValueError, match="rename the index"):
        abc().at[{"b": nx.wrap(np.array([0, 1]), "b")}].set(0.0)


def test_updates_in_an_eager_loop_reuse_one_compiled_helper():
    from saikei.core.named_axes import _index_ops

    cache = nx.zeros({"seq": 5, "d": 2})
    cache = cache.at[{"seq": 0}].set(nx.ones({"d": 2}))
    before = _index_ops._jitted_op._cache_size()
    for pos in range(1, 5):
        cache = cache.at[{"seq": pos}].set(nx.ones({"d": 2}) * pos)
    assert _index_ops._jitted_op._cache_size() == before
    np.testing.assert_array_equal(as_numpy(cache, ["seq", "d"])[:, 0], [1, 1, 2, 3, 4])


def test_at_with_an_out_of_bounds_integer_name_index_raises():
    with pytest.raises(IndexError, match="out of bounds for axis 'a' of size 2"):
        abc().at[{"a": 2}].set(0.0)


def test_at_with_a_boolean_mask_runs_eagerly():
    arr = abc().untag("b")
    out = arr.at[np.array([True, False, True])].set(0.0)
    expected = VALUES.copy()
    expected[:, [0, 2]] = 0
    np.testing.assert_array_equal(as_numpy(out, ["a", None, "c"]), expected)


def test_index_size_mismatch_names_the_indexing_operation():
    # Regression: the error used to say `nmap(fn)` / `nmap(update)`.
    arr = sk.nx.zeros({"a": 3, "b": 4})
    index = sk.nx.wrap(np.array([0, 1]), "b")
    with pytest.raises(ValueError, match=r"nmap\(NamedArray.__getitem__ \(args: array"):
        arr[{"a": index}]
    with pytest.raises(ValueError, match=r"nmap\(NamedArray.at\[\.\.\.\]\.get "):
        arr.at[{"a": index}].get()
    with pytest.raises(
        ValueError, match=r"nmap\(NamedArray.at\[\.\.\.\]\.add \(args: array, values"
    ):
        arr.at[{"a": 0}].add(sk.nx.ones({"b": 5}))
