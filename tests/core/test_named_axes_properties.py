"""Property tests for sk.nx against plain numpy on arrays arranged by hand."""

import string

import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from saikei import sk

nx = sk.nx

POOL = ("a", "b", "c", "d")


def as_numpy(arr, order):
    """Values of `arr` with axes in `order` (None = next positional axis), read from
    the documented representation (`axis_names` aligned with trailing data dims)."""
    data = np.asarray(arr.data_array)
    full = (None,) * (data.ndim - len(arr.axis_names)) + tuple(arr.axis_names)
    positional = iter(d for d, n in enumerate(full) if n is None)
    perm = [next(positional) if n is None else full.index(n) for n in order]
    assert sorted(perm) == list(range(data.ndim)), (order, full)
    return np.transpose(data, perm)


def random_values(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype == np.int32:
        return rng.integers(-5, 6, size=shape).astype(np.int32)
    return rng.normal(size=shape).astype(np.float32)


@st.composite
def sizes(draw):
    return {name: draw(st.integers(1, 3)) for name in POOL}


@st.composite
def named_array(draw, size_of, names=None, npos=None, dtype=np.float32):
    """A NamedArray with a random memory layout, and its values as a numpy array
    whose axes are (positional..., names...)."""
    if names is None:
        names = draw(st.permutations(POOL))[: draw(st.integers(0, len(POOL)))]
    names = list(names)
    if npos is None:
        npos = draw(st.integers(0, 2))
    pos_shape = tuple(draw(st.integers(1, 3)) for _ in range(npos))
    canonical = random_values(
        pos_shape + tuple(size_of[n] for n in names), dtype, draw(st.integers(0, 2**31))
    )
    # Memory layout: names in a random order, positional axes interleaved
    # anywhere but kept in their order.
    name_slots = draw(st.permutations(range(len(names))))
    items = [("name", i) for i in name_slots]
    for p in range(npos):
        at = draw(st.integers(0, len(items)))
        later = [i for i, item in enumerate(items) if item[0] == "pos"]
        at = max([at] + [i + 1 for i in later])
        items.insert(at, ("pos", p))
    perm = [i if kind == "pos" else npos + i for kind, i in items]
    data = np.transpose(canonical, perm)
    axis_names = tuple(None if kind == "pos" else names[i] for kind, i in items)
    arr = nx.NamedArray(jnp.asarray(data), axis_names)
    arr.check_valid()
    return arr, canonical, names


def arrange(values, names, npos, target_names):
    """Numpy oracle: moves named axes into `target_names` order, size 1 if missing."""
    order = list(range(npos)) + [npos + names.index(n) for n in target_names if n in names]
    moved = np.transpose(values, order)
    shape = list(moved.shape[:npos])
    it = iter(moved.shape[npos:])
    for n in target_names:
        shape.append(next(it) if n in names else 1)
    return moved.reshape(shape)


FLOAT_OPS = {
    "add": (lambda x, y: x + y, np.add),
    "sub": (lambda x, y: x - y, np.subtract),
    "mul": (lambda x, y: x * y, np.multiply),
    "max": (jnp.maximum, np.maximum),
    "less": (lambda x, y: x < y, np.less),
}
INT_OPS = {
    "add": (lambda x, y: x + y, np.add),
    "mul": (lambda x, y: x * y, np.multiply),
    "and": (lambda x, y: x & y, np.bitwise_and),
    "ge": (lambda x, y: x >= y, np.greater_equal),
}
BOOL_OPS = {
    "and": (lambda x, y: x & y, np.logical_and),
    "or": (lambda x, y: x | y, np.logical_or),
    "xor": (lambda x, y: x ^ y, np.logical_xor),
    "eq": (lambda x, y: x == y, np.equal),
}
OPS = {np.float32: FLOAT_OPS, np.int32: INT_OPS, np.bool_: BOOL_OPS}


@given(st.data(), sizes(), st.sampled_from([np.float32, np.int32, np.bool_]))
def test_elementwise_binary_ops_agree_with_numpy(data, size_of, dtype):
    npos = data.draw(st.integers(0, 2))
    x, xv, xn = data.draw(named_array(size_of, npos=npos, dtype=dtype))
    # y's positional shape broadcasts against x's: a suffix of it, or nothing.
    y_npos = data.draw(st.integers(0, npos))
    y, yv, yn = data.draw(named_array(size_of, npos=0, dtype=dtype))
    if y_npos:
        y_pos_shape = xv.shape[npos - y_npos : npos]
        yv = np.broadcast_to(yv, y_pos_shape + yv.shape).copy()
        y = nx.NamedArray(jnp.asarray(yv), tuple(yn))
    _, (op, np_op) = data.draw(st.sampled_from(sorted(OPS[dtype].items())))
    # Operators take the fast elementwise path; nmap of a lambda takes the vmap path.
    via_nmap = data.draw(st.booleans()) or isinstance(op, jnp.ufunc)
    out = nx.nmap(op)(x, y) if via_nmap else op(x, y)
    union = sorted(set(xn) | set(yn))
    assert out.named_shape == {n: size_of[n] for n in union}
    expected = np_op(arrange(xv, xn, npos, union), arrange(yv, yn, y_npos, union))
    got = as_numpy(out, [None] * len(out.positional_shape) + union)
    if dtype == np.float32:
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, expected)


@given(st.data(), sizes(), st.sampled_from([np.float32, np.int32, np.bool_]))
def test_sum_over_an_untagged_axis_agrees_with_numpy(data, size_of, dtype):
    names = data.draw(st.permutations(POOL))[: data.draw(st.integers(1, 4))]
    x, xv, xn = data.draw(named_array(size_of, names=names, npos=0, dtype=dtype))
    reduced = data.draw(st.sampled_from(xn))
    out = nx.nmap(jnp.sum)(x.untag(reduced))
    rest = [n for n in xn if n != reduced]
    expected = xv.sum(axis=xn.index(reduced))
    got = as_numpy(out, rest)
    if dtype == np.float32:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, expected)


@given(st.data(), sizes())
def test_tag_untag_and_order_as_round_trips_preserve_values(data, size_of):
    names = data.draw(st.permutations(POOL))[: data.draw(st.integers(1, 4))]
    x, xv, xn = data.draw(named_array(size_of, names=names, npos=0))
    chosen = data.draw(st.permutations(xn))[: data.draw(st.integers(1, len(xn)))]
    untagged = x.untag(*chosen)
    assert untagged.positional_shape == tuple(size_of[n] for n in chosen)
    rest = [n for n in xn if n not in chosen]
    np.testing.assert_array_equal(
        as_numpy(untagged, [None] * len(chosen) + rest),
        arrange(xv, xn, 0, list(chosen) + rest),
    )
    np.testing.assert_array_equal(as_numpy(untagged.tag(*chosen), xn), xv)
    order = data.draw(st.permutations(xn))
    ordered = x.order_as(*order)
    assert ordered.axis_names == tuple(order)
    np.testing.assert_array_equal(np.asarray(ordered.data_array), arrange(xv, xn, 0, order))
    np.testing.assert_array_equal(x.unwrap(*order), arrange(xv, xn, 0, order))


@st.composite
def basic_index(draw, size):
    kind = draw(st.sampled_from(["int", "slice", "array", "none"]))
    if kind == "int":
        return kind, draw(st.integers(-size, size - 1))
    if kind == "slice":
        start = draw(st.none() | st.integers(0, size))
        stop = draw(st.none() | st.integers(0, size))
        step = draw(st.none() | st.integers(1, 2))
        return kind, slice(start, stop, step)
    if kind == "array":
        length = draw(st.integers(0, 3))
        return kind, np.array(
            draw(st.lists(st.integers(0, size - 1), min_size=length, max_size=length)),
            dtype=np.int32,
        )
    return kind, None


@given(st.data(), sizes())
def test_dict_indexing_agrees_with_numpy(data, size_of):
    names = data.draw(st.permutations(POOL))[: data.draw(st.integers(1, 4))]
    npos = data.draw(st.integers(0, 1))
    x, xv, xn = data.draw(named_array(size_of, names=names, npos=npos))
    index = {}
    used_array = False
    for n in xn:
        kind, value = data.draw(basic_index(size_of[n]))
        if kind == "none" or (kind == "array" and used_array):
            continue
        used_array = used_array or kind == "array"
        index[n] = (kind, value)
    out = x[{n: v for n, (_, v) in index.items()}]
    # Oracle: ints and slices with numpy basic indexing, then one np.take.
    basic = tuple([slice(None)] * npos) + tuple(
        index[n][1] if n in index and index[n][0] != "array" else slice(None) for n in xn
    )
    expected = xv[basic]
    remaining = [n for n in xn if not (n in index and index[n][0] == "int")]
    order = [None] * npos + remaining
    arrays = [(n, v) for n, (k, v) in index.items() if k == "array"]
    if arrays:
        ((name, idx),) = arrays
        axis = npos + remaining.index(name)
        expected = np.moveaxis(np.take(expected, idx, axis=axis), axis, 0)
        order = [None] + [None] * npos + [n for n in remaining if n != name]
    assert out.positional_shape == expected.shape[: order.count(None)]
    np.testing.assert_array_equal(as_numpy(out, order), expected)


@given(st.data(), sizes(), st.sampled_from(["set", "add"]))
def test_at_updates_agree_with_numpy(data, size_of, method):
    names = data.draw(st.permutations(POOL))[: data.draw(st.integers(1, 4))]
    x, xv, xn = data.draw(named_array(size_of, names=names, npos=0))
    index = {}
    for n in xn:
        kind, value = data.draw(basic_index(size_of[n]))
        if kind in ("int", "slice"):
            index[n] = (kind, value)
    np_index = tuple(index[n][1] if n in index else slice(None) for n in xn)
    remaining = [n for n in xn if not (n in index and index[n][0] == "int")]
    target_shape = xv[np_index].shape
    value_names = [n for n in data.draw(st.permutations(remaining)) if data.draw(st.booleans())]
    value_sizes = dict(zip(remaining, target_shape))
    vv = random_values(
        tuple(value_sizes[n] for n in value_names), np.float32, data.draw(st.integers(0, 2**31))
    )
    values = nx.wrap(vv, *value_names) if value_names else float(vv)
    out = getattr(x.at[{n: v for n, (_, v) in index.items()}], method)(values)
    expected = xv.copy()
    broadcast = np.broadcast_to(arrange(vv, value_names, 0, remaining), target_shape)
    if method == "set":
        expected[np_index] = broadcast
    else:
        expected[np_index] += broadcast
    np.testing.assert_allclose(as_numpy(out, xn), expected, rtol=1e-6)


@given(st.data(), sizes(), st.integers(1, 3))
def test_stack_agrees_with_numpy(data, size_of, count):
    names = data.draw(st.permutations(POOL[:3]))[: data.draw(st.integers(0, 3))]
    arrays = [data.draw(named_array(size_of, names=names, npos=0)) for _ in range(count)]
    out = nx.stack([a for a, _, _ in arrays], "s")
    np.testing.assert_array_equal(as_numpy(out, ["s", *names]), np.stack([v for _, v, _ in arrays]))


@given(st.data(), sizes(), st.integers(1, 3))
def test_concatenate_agrees_with_numpy(data, size_of, count):
    names = list(data.draw(st.permutations(POOL)))[: data.draw(st.integers(1, 4))]
    along = data.draw(st.sampled_from(names))
    arrays = []
    for _ in range(count):
        local = dict(size_of, **{along: data.draw(st.integers(1, 3))})
        arrays.append(data.draw(named_array(local, names=names, npos=0)))
    out = nx.concatenate([a for a, _, _ in arrays], along)
    expected = np.concatenate([v for _, v, _ in arrays], axis=names.index(along))
    np.testing.assert_array_equal(as_numpy(out, names), expected)


@given(st.data(), sizes())
def test_nmap_dot_agrees_with_einsum(data, size_of):
    size_of = dict(size_of, e=data.draw(st.integers(1, 4)))
    x_names = [n for n in data.draw(st.permutations(POOL)) if data.draw(st.booleans())]
    y_names = [n for n in data.draw(st.permutations(POOL)) if data.draw(st.booleans())]
    x_names.insert(data.draw(st.integers(0, len(x_names))), "e")
    y_names.insert(data.draw(st.integers(0, len(y_names))), "e")
    x, xv, _ = data.draw(named_array(size_of, names=x_names, npos=0))
    y, yv, _ = data.draw(named_array(size_of, names=y_names, npos=0))
    out = nx.nmap(jnp.dot)(x.untag("e"), y.untag("e"))
    letters = {n: string.ascii_lowercase[i] for i, n in enumerate((*POOL, "e"))}
    union = sorted((set(x_names) | set(y_names)) - {"e"})
    spec = (
        "".join(letters[n] for n in x_names)
        + ","
        + "".join(letters[n] for n in y_names)
        + "->"
        + "".join(letters[n] for n in union)
    )
    expected = np.einsum(spec, xv, yv)
    np.testing.assert_allclose(as_numpy(out, union), expected, rtol=1e-5, atol=1e-5)
