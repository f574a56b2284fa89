"""NamedArray under penzai's field names, and detection of relabelled data.

penzai stores a NamedArray as `named_axes` (an ordered name -> size mapping
for the trailing data dims) plus `data_array`, and a NamedArrayView as
`data_shape`, `data_axis_for_logical_axis`, `data_axis_for_name` plus
`data_array`. saikei has one representation that accepts and answers both.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk

nx = sk.nx


def test_named_axes_constructor_keywords():
    data = np.arange(24.0).reshape(4, 2, 3)
    x = nx.NamedArray(named_axes=collections.OrderedDict(a=2, b=3), data_array=jnp.asarray(data))
    assert x.positional_shape == (4,)
    assert x.named_shape == {"a": 2, "b": 3}
    assert x.named_axes == collections.OrderedDict([("a", 2), ("b", 3)])
    assert isinstance(x.named_axes, collections.OrderedDict)
    np.testing.assert_array_equal(x.untag_prefix("b", "a").unwrap(), data.transpose(2, 1, 0))


def test_named_axes_positional_order_of_penzai():
    # penzai's dataclass order is (named_axes, data_array).
    x = nx.NamedArray(collections.OrderedDict(a=3), jnp.zeros((2, 3)))
    assert x.named_shape == {"a": 3} and x.positional_shape == (2,)


def test_named_axes_sizes_must_match_the_trailing_dims():
    with pytest.raises(ValueError, match=r"trailing dimensions .* shape \(2, 3\)"):
        nx.NamedArray(named_axes={"a": 2}, data_array=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"repeated|integers"):
        nx.NamedArray(named_axes={1: 3}, data_array=jnp.zeros((3,)))


def test_named_axes_with_a_data_leaf_without_shape_keeps_the_sizes():
    # A tree of shardings (or other placeholders) mirrors a real array.
    x = nx.NamedArray(named_axes={"a": 2, "b": 3}, data_array="placeholder")
    assert x.named_shape == {"a": 2, "b": 3}
    real = nx.zeros({"a": 2, "b": 3})
    assert jax.tree_util.tree_structure(x) == jax.tree_util.tree_structure(real)
    doubled = jax.tree_util.tree_map(lambda spec, arr: arr * 2, x, real)
    assert doubled.named_shape == {"a": 2, "b": 3}


def test_view_constructor_keywords_in_data_order():
    data = np.arange(24).reshape(2, 3, 4)
    v = nx.NamedArrayView(
        data_shape=(2, 3, 4),
        data_axis_for_logical_axis=(1,),
        data_axis_for_name={"a": 0, "b": 2},
        data_array=jnp.asarray(data),
    )
    assert v.positional_shape == (3,)
    assert v.named_shape == {"a": 2, "b": 4}
    assert v.data_shape == (2, 3, 4)
    assert v.data_axis_for_logical_axis == (1,)
    assert v.data_axis_for_name == {"a": 0, "b": 2}
    np.testing.assert_array_equal(v.tag("p").unwrap("a", "p", "b"), data)


def test_view_constructor_with_positional_axes_out_of_data_order():
    # Logical axis 0 is data dim 2 and logical axis 1 is data dim 0.
    data = np.arange(24).reshape(2, 3, 4)
    v = nx.NamedArrayView(
        data_shape=(2, 3, 4),
        data_axis_for_logical_axis=(2, 0),
        data_axis_for_name={"a": 1},
        data_array=jnp.asarray(data),
    )
    assert v.positional_shape == (4, 2)
    assert v.named_shape == {"a": 3}
    np.testing.assert_array_equal(v.tag("p", "q").unwrap("p", "q", "a"), data.transpose(2, 0, 1))
    # Per position of "a", the positional slice is data[:, a, :].T, as numpy says.
    sums = nx.nmap(lambda m: m[:, 0])(v)
    np.testing.assert_array_equal(sums.tag("p").unwrap("a", "p"), data[0, :, :])


def test_view_constructor_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="data_shape"):
        nx.NamedArrayView(
            data_shape=(2, 3),
            data_axis_for_logical_axis=(0,),
            data_axis_for_name={"a": 1},
            data_array=jnp.zeros((2, 4)),
        )
    with pytest.raises(ValueError, match="exactly once"):
        nx.NamedArrayView(
            data_shape=(2, 3),
            data_axis_for_logical_axis=(0,),
            data_axis_for_name={"a": 0},
            data_array=jnp.zeros((2, 3)),
        )
    with pytest.raises(TypeError, match=r"not several|not both"):
        nx.NamedArray(jnp.zeros(3), ("a",), named_axes={"a": 3})


@pytest.mark.parametrize(
    ("make", "named", "logical", "by_name"),
    [
        (lambda: nx.zeros({"a": 2, "b": 3}), {"a": 2, "b": 3}, (), {"a": 0, "b": 1}),
        (lambda: nx.zeros({"a": 2, "b": 3}).untag("b"), {"a": 2}, (1,), {"a": 0}),
        (lambda: nx.wrap(jnp.zeros((5, 2))).tag_prefix("k"), {"k": 5}, (1,), {"k": 0}),
    ],
)
def test_penzai_fields_read_back(make, named, logical, by_name):
    x = make()
    assert x.named_axes == collections.OrderedDict(named)
    assert x.data_axis_for_logical_axis == logical
    assert x.data_axis_for_name == by_name
    assert x.data_shape == tuple(x.data_array.shape)


def test_fields_roundtrip_through_the_view_constructor():
    x = nx.wrap(jnp.arange(24).reshape(2, 3, 4), "a", "b", "c").untag("c", "a")
    again = nx.NamedArrayView(
        data_shape=x.data_shape,
        data_axis_for_logical_axis=x.data_axis_for_logical_axis,
        data_axis_for_name=x.data_axis_for_name,
        data_array=x.data_array,
    )
    assert again.positional_shape == x.positional_shape
    np.testing.assert_array_equal(
        again.tag("p", "q").unwrap("p", "q", "b"), x.tag("p", "q").unwrap("p", "q", "b")
    )


# --- relabelled data is detected (issue 14, wrong result 5) ----------------


def test_vmap_with_out_axes_1_is_detected():
    out = jax.vmap(lambda k: nx.wrap(jnp.arange(3.0) * k, "c"), out_axes=1)(jnp.arange(4.0))
    with pytest.raises(ValueError, match="no longer matches its axis names"):
        out.named_shape  # noqa: B018
    with pytest.raises(ValueError, match="out_axes"):
        out.unwrap("c")
    with pytest.raises(ValueError, match="no longer matches"):
        out * 2
    with pytest.raises(ValueError, match="no longer matches"):
        nx.nmap(jnp.sum)(out)


def test_vmap_with_out_axes_minus_1_is_detected():
    out = jax.vmap(lambda k: nx.wrap(jnp.ones((2, 3)) * k, "a", "b"), out_axes=-1)(jnp.arange(4.0))
    with pytest.raises(nx.MislabeledNamedArrayError):
        out.positional_shape  # noqa: B018


def test_vmap_with_in_axes_over_a_named_dimension_is_detected():
    x = nx.NamedArray(jnp.zeros((4, 2, 3)), ("a", "b"))  # positional axis of size 4 first
    with pytest.raises(ValueError, match="no longer matches"):
        jax.vmap(lambda t: t.named_shape, in_axes=2)(x)


def test_tree_map_that_resizes_a_named_dim_is_detected():
    x = nx.zeros({"a": 4, "b": 3})
    sliced = jax.tree_util.tree_map(lambda d: d[:, :2], x)
    with pytest.raises(ValueError, match="no longer matches"):
        sliced.named_shape  # noqa: B018


def test_mislabeled_arrays_still_flatten_and_print():
    out = jax.vmap(lambda k: nx.wrap(jnp.arange(3.0) * k, "c"), out_axes=1)(jnp.arange(4.0))
    (leaf,) = jax.tree_util.tree_leaves(out)
    assert leaf.shape == (3, 4)
    assert "mislabeled" in repr(out)
    # Moving the mapped axis back in front repairs it.
    fixed = jax.tree_util.tree_map(lambda d: d.T, out)
    assert fixed.positional_shape == (4,) and fixed.named_shape == {"c": 3}


def test_vmap_with_default_axes_still_works():
    x = nx.NamedArray(jnp.arange(24.0).reshape(4, 2, 3), ("a", "b"))
    out = jax.vmap(lambda t: t.untag("a").sum())(x)
    assert out.positional_shape == (4,) and out.named_shape == {"b": 3}
    ys = jax.lax.scan(lambda c, t: (c, t * 2), 0.0, x)[1]
    assert ys.named_shape == {"a": 2, "b": 3}
