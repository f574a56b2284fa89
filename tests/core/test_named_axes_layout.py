"""Memory layouts produced by nmap, elementwise ops, updates and indexing.

Regression tests for a slowdown where `nmap` returned its outputs with the
named axes trailing (`vmap(out_axes=-1)`), so that a chain of `nmap(jnp.dot)`
calls kept transposing its activations. The layout is part of the documented
representation (`axis_names` aligned with the trailing data dims), so these
tests assert it directly, plus values against numpy on random layouts.
"""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from saikei import sk

nx = sk.nx

POOL = ("a", "b", "c", "d")


def as_numpy(arr, order):
    """Values of `arr` with axes in `order` (None = next positional axis)."""
    data = np.asarray(arr.data_array)
    full = (None,) * (data.ndim - len(arr.axis_names)) + tuple(arr.axis_names)
    positional = iter(d for d, n in enumerate(full) if n is None)
    perm = [next(positional) if n is None else full.index(n) for n in order]
    assert sorted(perm) == list(range(data.ndim)), (order, full)
    return np.transpose(data, perm)


def sample(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def primitives(fun, *args):
    """The names of every primitive in the jaxpr of `fun`, sub-jaxprs included."""
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            found.add(eqn.primitive.name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fun)(*args).jaxpr)
    return found


# ------------------------------------------------------------------ nmap


def test_nmap_dot_returns_the_names_first_layout_of_vmap():
    x = nx.wrap(jnp.asarray(sample((4, 6))), "batch", "f")
    w = nx.wrap(jnp.asarray(sample((6, 5), 1)), "f", "h")
    out = nx.nmap(jnp.dot)(x.untag("f"), w.untag("f", "h"))
    # Names lead and the positional output axis trails: the next contraction
    # over h (after `.tag("h")`) reads the data without a transpose.
    assert out.axis_names == ("batch", None)
    assert out.data_array.shape == (4, 5)
    np.testing.assert_allclose(
        np.asarray(out.data_array), np.asarray(x.data_array) @ np.asarray(w.data_array), rtol=1e-5
    )


def test_nmap_output_names_lead_in_order_of_first_appearance():
    a = nx.NamedArray(jnp.asarray(sample((3, 2, 4))), ("b", None, "c"))
    y = nx.NamedArray(jnp.asarray(sample((5, 2), 1)), ("d", None))
    out = nx.nmap(jnp.outer)(a, y)
    assert out.axis_names == ("b", "c", "d", None, None)
    assert out.data_array.shape == (3, 4, 5, 2, 2)
    expected = np.einsum("bpc,dq->bcdpq", np.asarray(a.data_array), np.asarray(y.data_array))
    np.testing.assert_allclose(np.asarray(out.data_array), expected, rtol=1e-5)


def test_nmap_output_layout_is_the_same_for_every_output_leaf():
    x = nx.wrap(jnp.asarray(sample((2, 3))), "a", "b").untag("b")
    first, second = nx.nmap(lambda v: (v * 2, v.sum()))(x)
    assert first.axis_names == ("a", None)
    assert second.axis_names == ("a",)


def test_jitted_nmap_mlp_chain_has_no_transpose():
    x = nx.wrap(jnp.asarray(sample((8, 16))), "batch", "f")
    w = nx.wrap(jnp.asarray(sample((16, 32), 1)), "f", "h")
    b = nx.wrap(jnp.asarray(sample((32,), 2)), "h")
    w2 = nx.wrap(jnp.asarray(sample((32, 16), 3)), "h", "f")

    def chain(x, w, b, w2):
        for _ in range(3):
            h = nx.nmap(jnp.dot)(x.untag("f"), w.untag("f", "h")).tag("h") + b
            h = nx.nmap(jax.nn.relu)(h)
            x = nx.nmap(jnp.dot)(h.untag("h"), w2.untag("h", "f")).tag("f") + x
        return x

    assert "transpose" not in primitives(chain, x, w, b, w2)
    out = jax.jit(chain)(x, w, b, w2)
    assert out.axis_names == ("batch", "f")
    expected = np.asarray(x.data_array)
    for _ in range(3):
        hidden = np.maximum(expected @ np.asarray(w.data_array) + np.asarray(b.data_array), 0)
        expected = hidden @ np.asarray(w2.data_array) + expected
    np.testing.assert_allclose(np.asarray(out.data_array), expected, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------- elementwise


def test_elementwise_keeps_the_layout_of_the_largest_argument():
    h = nx.wrap(jnp.asarray(sample((4, 6))), "batch", "h")
    b = nx.wrap(jnp.asarray(sample((6,), 1)), "h")
    for out in (b + h, nx.nmap(jnp.add)(b, h), h * b):
        assert out.axis_names == ("batch", "h")
    assert "transpose" not in primitives(lambda b, h: b + h, b, h)
    np.testing.assert_allclose(
        as_numpy(b + h, ["batch", "h"]),
        np.asarray(h.data_array) + np.asarray(b.data_array)[None, :],
        rtol=1e-6,
    )


def test_elementwise_adds_missing_names_in_front_of_the_largest_layout():
    h = nx.NamedArray(jnp.asarray(sample((5, 4))), ("h", "batch"))
    s = nx.wrap(jnp.asarray(sample((3,), 1)), "seq")
    out = h * s
    assert out.axis_names == ("seq", "h", "batch")
    expected = np.asarray(s.data_array)[:, None, None] * np.asarray(h.data_array)[None]
    np.testing.assert_allclose(np.asarray(out.data_array), expected, rtol=1e-6)


def test_elementwise_transposes_only_the_smaller_operand():
    big = nx.NamedArray(jnp.asarray(sample((4, 5, 6))), ("a", "b", "c"))
    small = nx.NamedArray(jnp.asarray(sample((6, 4), 1)), ("c", "a"))
    out = small - big
    assert out.axis_names == ("a", "b", "c")
    expected = np.asarray(small.data_array).T[:, None, :] - np.asarray(big.data_array)
    np.testing.assert_allclose(np.asarray(out.data_array), expected, rtol=1e-6)


@st.composite
def laid_out(draw, canonical, names):
    """`canonical` (axes: positional..., names...) as a NamedArray in a random
    layout: names in any order, positional axes interleaved but in order."""
    npos = canonical.ndim - len(names)
    items = [("name", i) for i in draw(st.permutations(range(len(names))))]
    for p in range(npos):
        lowest = max([i + 1 for i, item in enumerate(items) if item[0] == "pos"], default=0)
        items.insert(draw(st.integers(lowest, len(items))), ("pos", p))
    perm = [i if kind == "pos" else npos + i for kind, i in items]
    axis_names = tuple(None if kind == "pos" else names[i] for kind, i in items)
    arr = nx.NamedArray(jnp.asarray(np.transpose(canonical, perm)), axis_names)
    arr.check_valid()
    return arr


@st.composite
def interleaved(draw, names, npos, size_of):
    """A NamedArray with `names` and `npos` positional axes in a random layout,
    with its values as numpy in the order (positional..., names...)."""
    pos_shape = tuple(draw(st.integers(1, 3)) for _ in range(npos))
    seed = draw(st.integers(0, 2**31))
    canonical = sample(pos_shape + tuple(size_of[n] for n in names), seed)
    return draw(laid_out(canonical, names)), canonical


def arrange(values, names, npos, target):
    """Numpy oracle: positional axes first, then `target` names (size 1 if missing)."""
    order = list(range(npos)) + [npos + names.index(n) for n in target if n in names]
    moved = np.transpose(values, order)
    sizes = iter(moved.shape[npos:])
    return moved.reshape(
        moved.shape[:npos] + tuple(next(sizes) if n in names else 1 for n in target)
    )


@given(st.data())
def test_where_with_plain_arrays_agrees_with_numpy_on_any_layout(data):
    size_of = {n: data.draw(st.integers(1, 3)) for n in POOL}
    npos = data.draw(st.integers(0, 2))
    x_names = list(data.draw(st.permutations(POOL)))[: data.draw(st.integers(0, 4))]
    y_names = list(data.draw(st.permutations(POOL)))[: data.draw(st.integers(0, 4))]
    x, xv = data.draw(interleaved(x_names, npos, size_of))
    y, yv = data.draw(interleaved(y_names, 0, size_of))
    pos_shape = xv.shape[:npos]
    # A plain array operand is positional: it broadcasts numpy-style against
    # the positional axes of the NamedArrays.
    plain_ndim = data.draw(st.integers(0, npos))
    plain = sample(pos_shape[npos - plain_ndim :], 7) > 0
    out = nx.nmap(jnp.where)(plain, x, y)
    union = sorted(set(x_names) | set(y_names))
    assert out.named_shape == {n: size_of[n] for n in union}
    assert out.positional_shape == pos_shape
    cond = plain.reshape(plain.shape + (1,) * len(union))
    expected = np.where(cond, arrange(xv, x_names, npos, union), arrange(yv, y_names, 0, union))
    np.testing.assert_array_equal(as_numpy(out, [None] * npos + union), expected)


# -------------------------------------------------------------- updates


def test_name_index_update_keeps_the_cache_layout_without_transposes():
    cache = nx.wrap(jnp.zeros((2, 5, 3, 4)), "batch", "seq", "heads", "d")
    value = nx.NamedArray(jnp.asarray(sample((4, 2, 3))), ("d", "batch", "heads"))

    def step(cache, value, pos):
        return cache.at[{"seq": pos}].set(value)

    out = step(cache, value, 2)
    assert out.axis_names == cache.axis_names
    expected = np.zeros((2, 5, 3, 4), np.float32)
    expected[:, 2] = np.transpose(np.asarray(value.data_array), (1, 2, 0))
    np.testing.assert_array_equal(np.asarray(out.data_array), expected)
    # Only the (small) update values may be moved, never the cache.
    jaxpr = jax.make_jaxpr(step)(cache, value, 2)
    cache_var = jaxpr.jaxpr.invars[0]
    for eqn in jaxpr.jaxpr.eqns:
        if eqn.primitive.name == "transpose":
            assert cache_var not in eqn.invars


def test_vectorized_update_returns_the_layout_of_the_updated_array():
    arr = nx.NamedArray(jnp.asarray(sample((3, 4, 2))), (None, "a", "b"))
    index = nx.wrap(np.array([0, 2, 1, 1]), "a")
    out = arr.at[index].set(0.0)
    assert out.axis_names == arr.axis_names
    expected = np.asarray(arr.data_array).copy()
    for j, i in enumerate([0, 2, 1, 1]):
        expected[i, j, :] = 0.0
    np.testing.assert_array_equal(np.asarray(out.data_array), expected)


@given(st.data(), st.sampled_from(["set", "add", "multiply"]))
def test_updates_with_positional_axes_agree_with_numpy(data, method):
    size_of = {n: data.draw(st.integers(1, 3)) for n in POOL}
    names = list(data.draw(st.permutations(POOL)))[: data.draw(st.integers(1, 4))]
    npos = data.draw(st.integers(0, 2))
    x, xv = data.draw(interleaved(names, npos, size_of))
    index = {}
    for n in names:
        kind = data.draw(st.sampled_from(["int", "slice", "none"]))
        if kind == "int":
            index[n] = data.draw(st.integers(-size_of[n], size_of[n] - 1))
        elif kind == "slice":
            index[n] = slice(data.draw(st.integers(0, size_of[n])), None)
    np_index = (slice(None),) * npos + tuple(index.get(n, slice(None)) for n in names)
    target_shape = xv[np_index].shape
    remaining = [n for n in names if not isinstance(index.get(n), int)]
    sizes = dict(zip(remaining, target_shape[npos:]))
    value_names = [n for n in data.draw(st.permutations(remaining)) if data.draw(st.booleans())]
    # Values may have some trailing positional axes (size 1 broadcasts).
    value_npos = data.draw(st.integers(0, npos))
    value_pos = tuple(
        data.draw(st.sampled_from([1, s])) for s in target_shape[npos - value_npos : npos]
    )
    vv = sample(value_pos + tuple(sizes[n] for n in value_names), data.draw(st.integers(0, 99)))
    values = data.draw(laid_out(vv, value_names))
    out = getattr(x.at[index], method)(values)
    assert out.axis_names == x.axis_names
    update = arrange(vv, value_names, value_npos, remaining)
    update = np.broadcast_to(update, target_shape[: npos - value_npos] + update.shape)
    expected = xv.copy()
    if method == "set":
        expected[np_index] = np.broadcast_to(update, target_shape)
    elif method == "add":
        expected[np_index] += np.broadcast_to(update, target_shape)
    else:
        expected[np_index] *= np.broadcast_to(update, target_shape)
    np.testing.assert_allclose(as_numpy(out, [None] * npos + names), expected, rtol=1e-6)


# ------------------------------------------------------------- indexing


def test_positional_slicing_of_an_nmap_output_does_not_move_data():
    x = nx.wrap(jnp.asarray(sample((4, 6))), "batch", "f")
    w = nx.wrap(jnp.asarray(sample((6, 5), 1)), "f", "h")

    def read(x, w):
        return nx.nmap(jnp.dot)(x.untag("f"), w.untag("f", "h"))[1:3]

    out = read(x, w)
    assert out.axis_names == ("batch", None)
    assert "transpose" not in primitives(read, x, w)
    full = np.asarray(x.data_array) @ np.asarray(w.data_array)
    np.testing.assert_allclose(np.asarray(out.data_array), full[:, 1:3], rtol=1e-5)


@st.composite
def positional_index(draw, pos_shape, every=False):
    """Ints, slices and None for the leading (or, with `every`, all) positional axes."""
    comps = []
    count = len(pos_shape) if every else draw(st.integers(0, len(pos_shape)))
    for size in pos_shape[:count]:
        if draw(st.booleans()):
            comps.append(None)
        kind = draw(st.sampled_from(["int", "slice"]))
        if kind == "int":
            comps.append(draw(st.integers(-size, size - 1)))
        else:
            start = draw(st.none() | st.integers(0, size))
            step = draw(st.none() | st.integers(1, 2))
            comps.append(slice(start, None, step))
    if draw(st.booleans()):
        comps.append(None)
    return tuple(comps)


@given(st.data())
def test_positional_indexing_agrees_with_numpy_on_any_layout(data):
    size_of = {n: data.draw(st.integers(1, 3)) for n in POOL}
    names = list(data.draw(st.permutations(POOL)))[: data.draw(st.integers(0, 3))]
    npos = data.draw(st.integers(1, 3))
    x, xv = data.draw(interleaved(names, npos, size_of))
    index = data.draw(positional_index(xv.shape[:npos]))
    out = x[index]
    expected = xv[index]
    new_npos = expected.ndim - len(names)
    assert out.positional_shape == expected.shape[:new_npos]
    np.testing.assert_array_equal(as_numpy(out, [None] * new_npos + names), expected)


@given(st.data(), st.sampled_from(["set", "add"]))
def test_positional_updates_agree_with_numpy_on_any_layout(data, method):
    size_of = {n: data.draw(st.integers(1, 3)) for n in POOL}
    names = list(data.draw(st.permutations(POOL)))[: data.draw(st.integers(0, 3))]
    npos = data.draw(st.integers(1, 2))
    x, xv = data.draw(interleaved(names, npos, size_of))
    pos_shape = xv.shape[:npos]
    count = data.draw(st.integers(0, npos))
    where = data.draw(st.sampled_from(["none", "front", "back"]))
    sizes = pos_shape[npos - count :] if where == "front" else pos_shape[:count]
    comps = tuple(c for c in data.draw(positional_index(sizes, every=True)) if c is not None)
    if where == "front":
        comps = (Ellipsis, *comps)
    elif where == "back":
        comps = (*comps, Ellipsis)
    # The oracle's Ellipsis must only cover positional axes (xv has names last).
    np_comps = tuple(
        s
        for c in comps
        for s in ((slice(None),) * (npos - len(comps) + 1) if c is Ellipsis else (c,))
    )
    target_shape = xv[np_comps].shape
    new_npos = len(target_shape) - len(names)
    value_names = [n for n in data.draw(st.permutations(names)) if data.draw(st.booleans())]
    value_npos = data.draw(st.integers(0, new_npos))
    value_pos = target_shape[new_npos - value_npos : new_npos]
    vv = sample(value_pos + tuple(size_of[n] for n in value_names), data.draw(st.integers(0, 99)))
    values = data.draw(laid_out(vv, value_names))
    out = getattr(x.at[comps], method)(values)
    assert out.axis_names == x.axis_names
    update = arrange(vv, value_names, value_npos, names)
    update = np.broadcast_to(update, target_shape)
    expected = xv.copy()
    if method == "set":
        expected[np_comps] = update
    else:
        expected[np_comps] += update
    np.testing.assert_allclose(as_numpy(out, [None] * npos + names), expected, rtol=1e-6)


# ------------------------------------------------------------- axis ops


def test_stack_puts_the_new_axis_first_so_scan_reads_it_in_place():
    values = [sample((2, 3), seed) for seed in range(4)]

    def stack_and_scan(*arrays):
        stacked = nx.stack([nx.wrap(v, "a", "b") for v in arrays], "s")
        return stacked, nx.scan(lambda c, x: (c + x, c), "s", nx.zeros({"a": 2, "b": 3}), stacked)

    (stacked, (total, _)) = stack_and_scan(*values)
    assert stacked.axis_names == ("s", "a", "b")
    np.testing.assert_array_equal(np.asarray(stacked.data_array), np.stack(values))
    np.testing.assert_allclose(as_numpy(total, ["a", "b"]), np.sum(values, axis=0), rtol=1e-5)
    assert "transpose" not in primitives(stack_and_scan, *values)
