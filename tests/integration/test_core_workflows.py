"""Acceptance scenarios for saikei.core, following penzai's documented workflows.

Each test retells one step of a penzai tutorial or how-to (selectors, named
axes, variables and jitting, the common-task recipes) with small `sk.Struct`
layers written here, so that only the core is exercised. Numbers are checked
against numpy or plain Python, never against saikei itself.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from saikei import sk

# ---------------------------------------------------------------- test layers
#
# Minimal stand-ins for sk.nn layers: enough to build small models out of
# Structs and variables.


@sk.pytree_dataclass
class Chain(sk.Struct):
    """Runs its sublayers in order, passing side inputs to all of them."""

    sublayers: list

    def __call__(self, x: Any, **side: Any) -> Any:
        for layer in self.sublayers:
            x = layer(x, **side)
        return x


@sk.pytree_dataclass
class Dense(sk.Struct):
    """Contracts the "in" axis of the input with a weight of axes ("in", "out")."""

    weight: Any

    def __call__(self, x: Any, **side: Any) -> Any:
        return sk.nx.nmap(jnp.dot)(x.untag("in"), self.weight.value.untag("in"))


@sk.pytree_dataclass
class Bias(sk.Struct):
    """Adds a bias parameter."""

    bias: Any

    def __call__(self, x: Any, **side: Any) -> Any:
        return x + self.bias.value


@sk.pytree_dataclass
class Rename(sk.Struct):
    """Renames one named axis."""

    old: str = dataclasses.field(metadata={"pytree_node": False})
    new: str = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, x: Any, **side: Any) -> Any:
        return x.untag(self.old).tag(self.new)


@sk.pytree_dataclass
class Relu(sk.Struct):
    """Elementwise relu."""

    def __call__(self, x: Any, **side: Any) -> Any:
        return sk.nx.nmap(jax.nn.relu)(x)


@sk.pytree_dataclass
class Counter(sk.Struct):
    """Counts its calls in a StateVariable and passes the input through."""

    count: sk.StateVariable

    def __call__(self, x: Any, **side: Any) -> Any:
        self.count.value = self.count.value + 1
        return x


@sk.pytree_dataclass
class Capture(sk.Struct):
    """Appends every input it sees to a StateVariable holding a list."""

    saved: sk.StateVariable

    def __call__(self, x: Any, **side: Any) -> Any:
        self.saved.value = [*self.saved.value, x]
        return x


@sk.pytree_dataclass
class Dropout(sk.Struct):
    """Zeroes entries at random, drawing keys from a RandomStream side input."""

    rate: float = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, x: Any, *, random_stream: sk.RandomStream, **side: Any) -> Any:
        keys = sk.nx.random_split(random_stream.next_key(), x.named_shape)
        keep = sk.nx.nmap(jax.random.bernoulli)(keys, 1.0 - self.rate)
        return sk.nx.nmap(jnp.where)(keep, x / (1.0 - self.rate), 0.0)


def dense(label: str, w: np.ndarray) -> Dense:
    weight = sk.nx.wrap(jnp.asarray(w, jnp.float32), "in", "out")
    return Dense(sk.Parameter(label=label, value=weight))


def mlp(rng: np.random.RandomState) -> tuple[Chain, list[np.ndarray]]:
    """A 3 -> 4 -> 2 MLP and its weights as numpy arrays."""
    w1, b1 = rng.randn(3, 4), rng.randn(4)
    w2, b2 = rng.randn(4, 2), rng.randn(2)
    model = Chain(
        [
            dense("l1.w", w1),
            Bias(sk.Parameter(label="l1.b", value=sk.nx.wrap(jnp.asarray(b1, jnp.float32), "out"))),
            Relu(),
            Rename("out", "in"),
            dense("l2.w", w2),
            Bias(sk.Parameter(label="l2.b", value=sk.nx.wrap(jnp.asarray(b2, jnp.float32), "out"))),
        ]
    )
    return model, [w1, b1, w2, b2]


def mlp_numpy(x: np.ndarray, w1, b1, w2, b2) -> np.ndarray:
    return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2


# ================================================================ selectors
# (penzai's selectors tutorial)


def test_selecting_arrays_under_a_key_and_adding_to_them():
    tree = {"a": np.arange(3), "b": [1, 2], "c": {"d": np.zeros((2, 2)), "e": 5}}
    out = (
        sk.select(tree)
        .at(lambda t: t["c"])
        .at_instances_of(np.ndarray | int)
        .apply(lambda v: v + 100)
    )
    np.testing.assert_array_equal(out["c"]["d"], np.full((2, 2), 100.0))
    assert out["c"]["e"] == 105
    assert out["b"] == [1, 2]
    np.testing.assert_array_equal(out["a"], np.arange(3))


def test_at_on_a_struct_single_and_multiple():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        x: int
        y: list

    box = Box(4, [1, 2, 3])
    assert box.select().at(lambda b: b.x).get() == 4
    assert box.select().at(lambda b: (b.x, b.y[0]), multiple=True).get_sequence() == (4, 1)
    assert box.select().at(lambda b: b.y).at(lambda y: y[1]).set(20) == Box(4, [1, 20, 3])


def test_pytree_leaves_versus_childless_nodes():
    tree = [1, 2, (), 3, None, 4]
    assert sk.select(tree).at_pytree_leaves().get_sequence() == (1, 2, 3, 4)
    assert sk.select(tree).at_childless().get_sequence() == (1, 2, (), 3, None, 4)
    assert sk.select(tree).at_children().count() == 6


def test_where_pick_nth_and_invert():
    numbers = list(range(10))
    evens = sk.select(numbers).at_pytree_leaves().where(lambda v: v % 2 == 0)
    assert evens.get_sequence() == (0, 2, 4, 6, 8)
    assert evens.pick_nth_selected(2).get() == 4
    assert evens.invert().get_sequence() == (1, 3, 5, 7, 9)


def test_at_equal_to_and_at_subtrees_where():
    tree = {"a": [1, 2, 3], "b": [1, 2, 3], "c": 1}
    assert sk.select(tree).at_equal_to([1, 2, 3]).count() == 2
    assert sk.select(tree).at_equal_to(1).count() == 3
    arrays = {"small": jnp.arange(3.0), "big": jnp.arange(30.0)}
    small = sk.select(arrays).at_subtrees_where(lambda s: isinstance(s, jax.Array) and s.size <= 10)
    assert small.get_keypaths() == ((jax.tree_util.DictKey("small"),),)


def test_at_keypaths_from_tree_flatten_with_path():
    tree = {"a": 1, "b": [2, {"x": 3}]}
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    picked = sk.select(tree).at_keypaths([paths[2]])
    assert picked.get() == 3
    assert picked.set(30) == {"a": 1, "b": [2, {"x": 30}]}


def test_refine_chooses_a_field_per_type():
    @sk.pytree_dataclass
    class Foo(sk.Struct):
        left: Any
        right: Any

    @sk.pytree_dataclass
    class Bar(sk.Struct):
        inner: Any

    tree = [Foo(1, 2), Bar(3), Foo(4, 5)]

    def choose(node: Any) -> sk.Selection:
        if isinstance(node, Foo):
            return node.select().at(lambda f: f.right)
        return node.select().at(lambda b: b.inner)

    picked = sk.select(tree).at_instances_of(Foo | Bar).refine(choose)
    assert picked.get_sequence() == (2, 3, 5)


def test_count_is_empty_and_assert_count_is():
    sel = sk.select({"a": 1, "b": 2.5}).at_instances_of(float)
    assert sel.count() == len(sel) == 1
    assert not sel.is_empty()
    assert sk.select([1]).at_instances_of(str).is_empty()
    assert sel.assert_count_is(1).apply(lambda v: v * 2) == {"a": 1, "b": 5.0}
    with pytest.raises(AssertionError, match="2"):
        sk.select([1, 2]).at_children().assert_count_is(3)


def test_partition_map_and_combine():
    tree = {"w": np.arange(3.0), "n": 7, "v": np.ones(2)}
    selected, rest = sk.select(tree).at_instances_of(np.ndarray).partition()
    assert isinstance(rest["w"], sk.NotInThisPartition)
    assert rest["n"] == 7
    doubled = jax.tree_util.tree_map(lambda a: a * 2, selected)
    merged = sk.combine(doubled, rest)
    np.testing.assert_array_equal(merged["w"], np.arange(3.0) * 2)
    np.testing.assert_array_equal(merged["v"], np.full(2, 2.0))
    assert merged["n"] == 7


def test_set_set_sequence_and_set_by_path():
    sel = sk.select([10, 20, 30]).at_children()
    assert sel.set(0) == [0, 0, 0]
    assert sel.set_sequence([1, 2, 3]) == [1, 2, 3]
    assert sel.set_by_path(lambda path: path[0].idx * 100) == [0, 100, 200]
    first = (jax.tree_util.SequenceKey(0),)
    assert sel.pick_nth_selected(0).set_by_path({first: -1}) == [-1, 20, 30]


def test_gradient_with_respect_to_a_selected_subset():
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0), "n": 4}
    sel = sk.select(params).at(lambda p: p["w"])

    def loss(p: dict) -> jax.Array:
        return jnp.sum(p["w"] ** 2) * p["b"] + p["n"]

    grads = jax.grad(lambda chosen: loss(sel.set_by_path(chosen)))(sel.get_by_path())
    (grad_w,) = grads.values()
    np.testing.assert_allclose(grad_w, 2 * np.array([1.0, 2.0]) * 3.0)

    key = (jax.tree_util.DictKey("w"),)
    grads2 = jax.grad(lambda v: loss(sk.select(params).select_and_set_by_path(v)))(
        {key: params["w"]}
    )
    np.testing.assert_allclose(grads2[key], 2 * np.array([1.0, 2.0]) * 3.0)


def test_apply_with_keypath_keep_selected_and_selected_index():
    sel = sk.select({"l": [1, 2, 3]}).at(lambda t: t["l"]).at_children()
    kept = sel.apply(
        lambda path, v: (jax.tree_util.keystr(path), v), with_keypath=True, keep_selected=True
    )
    assert isinstance(kept, sk.Selection)
    assert kept.get_sequence() == (("['l'][0]", 1), ("['l'][1]", 2), ("['l'][2]", 3))
    assert sel.apply_with_selected_index(lambda i, v: 10 * i + v) == {"l": [1, 12, 23]}


def test_list_surgery_inside_a_dict():
    tree = {"l": [1, 2, 3], "k": 0}
    at_two = sk.select(tree).at(lambda t: t["l"][1])
    assert at_two.insert_after(99) == {"l": [1, 2, 99, 3], "k": 0}
    assert at_two.insert_before(99) == {"l": [1, 99, 2, 3], "k": 0}
    assert at_two.insert_before(99, and_select=True).get() == 99
    assert at_two.remove_from_parent() == {"l": [1, 3], "k": 0}
    every = sk.select(tree).at(lambda t: t["l"]).at_children()
    assert every.apply_and_inline(lambda v: [v] * v) == {"l": [1, 2, 2, 3, 3, 3], "k": 0}


def test_parameter_keypaths_of_a_model():
    model, _ = mlp(np.random.RandomState(0))
    paths = sk.select(model).at_instances_of(sk.Parameter).get_keypaths()
    assert [jax.tree_util.keystr(p) for p in paths] == [
        ".sublayers[0].weight",
        ".sublayers[1].bias",
        ".sublayers[4].weight",
        ".sublayers[5].bias",
    ]
    assert sk.pretty_keystr(paths[0], model) == "Chain.sublayers[0]/Dense.weight"
    deep = sk.select(model).at_subtrees_where(
        lambda path, node: isinstance(node, sk.Parameter) and path[-1].name == "bias",
        with_keypath=True,
    )
    assert [p.label for p in deep.get_sequence()] == ["l1.b", "l2.b"]


# ============================================================== named axes
# (penzai's named-axes tutorial)


def test_wrap_tag_untag_shapes():
    data = np.arange(24.0).reshape(2, 3, 4)
    arr = sk.nx.wrap(data)
    assert arr.positional_shape == (2, 3, 4) and arr.named_shape == {}
    tagged = arr.tag("foo", "bar", "baz")
    assert tagged.positional_shape == () and tagged.named_shape == {"foo": 2, "bar": 3, "baz": 4}
    view = tagged.untag("bar")
    assert view.positional_shape == (3,)
    assert view.named_shape == {"foo": 2, "baz": 4}
    # untag_prefix puts the new positional axes in front of the existing one.
    np.testing.assert_array_equal(view.untag_prefix("foo", "baz").unwrap(), data.transpose(0, 2, 1))


def test_plain_jnp_functions_refuse_named_arrays_but_nmap_works():
    data = np.arange(24.0).reshape(2, 3, 4)
    tagged = sk.nx.wrap(data, "foo", "bar", "baz")
    with pytest.raises(TypeError):
        jnp.sum(tagged.untag("bar"))
    sums = sk.nx.nmap(jnp.sum)(tagged.untag("foo"))
    assert sums.named_shape == {"bar": 3, "baz": 4}
    np.testing.assert_allclose(sums.unwrap("bar", "baz"), data.sum(0))


def test_nmap_shows_the_function_only_positional_slices():
    seen = []

    def record(x: jax.Array) -> jax.Array:
        seen.append(x.shape)
        return x.sum()

    tagged = sk.nx.wrap(np.ones((2, 3, 4)), "foo", "bar", "baz")
    sk.nx.nmap(record)(tagged.untag("baz"))
    assert seen == [(4,)]


def test_causal_attention_with_named_axes_matches_numpy():
    rng = np.random.RandomState(0)
    q = rng.randn(5, 2, 4).astype(np.float32)  # query_seq, heads, embed
    k = rng.randn(5, 2, 4).astype(np.float32)  # key_seq, heads, embed
    queries = sk.nx.wrap(q, "query_seq", "heads", "embed")
    keys = sk.nx.wrap(k, "key_seq", "heads", "embed")
    logits = sk.nx.nmap(jnp.dot)(queries.untag("embed"), keys.untag("embed"))
    mask = sk.nx.arange("query_seq", 5) >= sk.nx.arange("key_seq", 5)
    masked = sk.nx.nmap(jnp.where)(mask, logits, -1e9)
    probs = sk.nx.nmap(jax.nn.softmax)(masked.untag("key_seq")).tag("key_seq")
    got = probs.unwrap("heads", "query_seq", "key_seq")

    scores = np.einsum("qhe,khe->hqk", q, k)
    scores = np.where(np.tril(np.ones((5, 5), bool))[None], scores, -1e9)
    want = np.exp(scores - scores.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_infix_operators_broadcast_by_name():
    a = sk.nx.wrap(np.arange(3.0), "a")
    b = sk.nx.wrap(np.arange(4.0), "b")
    total = a + b
    assert total.named_shape == {"a": 3, "b": 4}
    np.testing.assert_array_equal(total.unwrap("a", "b"), np.arange(3.0)[:, None] + np.arange(4.0))
    np.testing.assert_array_equal((2 - a).unwrap("a"), 2 - np.arange(3.0))
    np.testing.assert_array_equal((b * b.untag("b").sum()).unwrap("b"), np.arange(4.0) * 6)


def test_methods_reduce_positional_axes_only():
    data = np.random.RandomState(1).randn(2, 3, 4)
    tagged = sk.nx.wrap(data, "foo", "bar", "baz")
    np.testing.assert_allclose(
        tagged.untag("baz").sum().unwrap("foo", "bar"), data.sum(2), rtol=1e-6
    )
    np.testing.assert_allclose(
        tagged.untag("bar").std().unwrap("foo", "baz"), data.std(1), rtol=1e-5
    )


def test_positional_and_dict_indexing_match_numpy():
    data = np.arange(24.0).reshape(2, 3, 4)
    tagged = sk.nx.wrap(data, "foo", "bar", "baz")
    np.testing.assert_array_equal(
        tagged.untag("baz")[1:3].tag("baz").unwrap("baz", "foo", "bar"),
        data[:, :, 1:3].transpose(2, 0, 1),
    )
    picked = tagged[{"foo": 1, "bar": sk.slice[1:3]}]
    assert picked.named_shape == {"bar": 2, "baz": 4}
    np.testing.assert_array_equal(picked.unwrap("bar", "baz"), data[1, 1:3])


def test_vocabulary_lookup_two_ways():
    rng = np.random.RandomState(2)
    logits = rng.randn(4, 7)
    tokens = rng.randint(0, 7, size=4)
    log_probs = sk.nx.wrap(logits, "seq", "vocabulary")
    toks = sk.nx.wrap(tokens, "seq")
    by_untag = log_probs.untag("vocabulary")[toks]
    by_dict = log_probs[{"vocabulary": toks}]
    want = logits[np.arange(4), tokens]
    np.testing.assert_allclose(by_untag.unwrap("seq"), want, rtol=1e-6)
    np.testing.assert_allclose(by_dict.unwrap("seq"), want, rtol=1e-6)


def test_tree_map_stacking_keeps_named_arrays_valid():
    data = np.arange(6.0).reshape(2, 3)
    arr = sk.nx.wrap(data, "a", "b")
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), arr, arr * 2, arr * 3)
    stacked.check_valid()
    assert stacked.positional_shape == (3,)
    assert stacked.named_shape == {"a": 2, "b": 3}
    np.testing.assert_array_equal(
        stacked.tag("s").unwrap("s", "a", "b"), np.stack([data, 2 * data, 3 * data])
    )


def test_tree_map_stacking_of_an_untagged_array_keeps_it_valid():
    # penzai's NamedArrayView breaks here and needs with_positional_prefix();
    # saikei's single representation stays consistent.
    data = np.arange(24.0).reshape(2, 3, 4)
    view = sk.nx.wrap(data, "foo", "bar", "baz").untag("bar")
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), view, view)
    stacked.check_valid()
    assert stacked.positional_shape == (2, 3)
    np.testing.assert_array_equal(
        stacked.tag("s", "bar").unwrap("s", "foo", "bar", "baz"), np.stack([data, data])
    )


def test_constructors_and_broadcasting():
    assert sk.nx.ones({"a": 2}).named_shape == {"a": 2}
    np.testing.assert_array_equal(sk.nx.full({"a": 2}, 3).unwrap("a"), [3, 3])
    np.testing.assert_array_equal(sk.nx.arange("a", 2, 6).unwrap("a"), np.arange(2, 6))
    outer = sk.nx.arange("i", 3) < sk.nx.arange("j", 3)
    np.testing.assert_array_equal(outer.unwrap("i", "j"), np.triu(np.ones((3, 3), bool), 1))
    assert sk.nx.ones({"a": 2}).broadcast_to((3,)).positional_shape == (3,)
    grown = sk.nx.arange("a", 2).broadcast_to(named_shape={"b": 5})
    np.testing.assert_array_equal(grown.unwrap("b", "a"), np.tile(np.arange(2), (5, 1)))
    like = sk.nx.ones({"a": 2}).broadcast_like(sk.nx.zeros({"b": 3, "a": 2}))
    assert like.named_shape == {"a": 2, "b": 3}


def test_stack_concatenate_and_prefix_tagging():
    a = sk.nx.wrap(np.arange(3.0), "a")
    np.testing.assert_array_equal(
        sk.nx.stack([a, a * 2], "s").unwrap("s", "a"), [np.arange(3.0), 2 * np.arange(3.0)]
    )
    np.testing.assert_array_equal(
        sk.nx.concatenate([a, a + 10], "a").unwrap("a"), np.r_[np.arange(3.0), np.arange(3.0) + 10]
    )
    pos = sk.nx.wrap(np.zeros((2, 3)))
    assert pos.tag_prefix("x").named_shape == {"x": 2}
    assert pos.tag_prefix("x").positional_shape == (3,)
    assert pos.tag("x", "y").untag_prefix("y").positional_shape == (3,)


def test_random_split_then_nmap_normal():
    keys = sk.nx.random_split(sk.nx.wrap(jax.random.key(1)), {"batch": 16})
    samples = sk.nx.nmap(jax.random.normal)(keys, shape=(4,))
    assert samples.named_shape == {"batch": 16}
    assert samples.positional_shape == (4,)
    rows = np.asarray(samples.untag_prefix("batch").unwrap())
    assert len({tuple(r) for r in rows}) == 16  # every batch element got its own key


def test_fixing_pytree_mismatches_with_canonicalize_and_order_like():
    xa = sk.nx.zeros({"a": 2, "b": 3})
    xb = sk.nx.zeros({"b": 3, "a": 2})
    structure = jax.tree_util.tree_structure
    assert structure(xa) != structure(xb)
    assert structure(xa.canonicalize()) == structure(xb.canonicalize())
    assert structure(xb.order_like(xa)) == structure(xa)
    assert structure(sk.nx.order_like({"k": xb}, {"k": xa})) == structure({"k": xa})
    summed = jax.tree_util.tree_map(jnp.add, xa, xb.order_like(xa))
    assert summed.named_shape == {"a": 2, "b": 3}


def test_named_scan_matches_a_numpy_cumulative_sum():
    data = np.arange(12.0).reshape(4, 3)
    xs = sk.nx.wrap(data, "t", "f")
    total, running = sk.nx.scan(lambda c, x: (c + x, c + x), "t", sk.nx.zeros({"f": 3}), xs)
    np.testing.assert_allclose(total.unwrap("f"), data.sum(0))
    np.testing.assert_allclose(running.unwrap("t", "f"), np.cumsum(data, 0))


def test_induction_style_advanced_indexing_with_named_offsets():
    data = np.random.RandomState(3).randn(2, 10, 10, 3)
    attn = sk.nx.wrap(data, "blocks", "seq", "kv_seq", "heads")
    offset = sk.nx.arange("offset", 5)
    picked = attn[{"seq": offset + 4, "kv_seq": offset + 1}]
    assert picked.named_shape == {"blocks": 2, "heads": 3, "offset": 5}
    want = data[:, np.arange(5) + 4, np.arange(5) + 1, :]
    np.testing.assert_allclose(picked.unwrap("blocks", "offset", "heads"), want)
    score = picked.untag("offset").mean()
    np.testing.assert_allclose(score.unwrap("blocks", "heads"), want.mean(1), rtol=1e-5)


def test_at_updates_with_named_values():
    mask = sk.nx.ones({"blocks": 2, "heads": 3})
    knocked = mask.at[{"blocks": 1, "heads": 2}].set(0.0)
    want = np.ones((2, 3))
    want[1, 2] = 0.0
    np.testing.assert_array_equal(knocked.unwrap("blocks", "heads"), want)
    scaled = mask.at[{"heads": sk.slice[1:]}].multiply(sk.nx.wrap(np.array([2.0, 3.0]), "blocks"))
    want = np.ones((2, 3))
    want[:, 1:] *= np.array([2.0, 3.0])[:, None]
    np.testing.assert_array_equal(scaled.unwrap("blocks", "heads"), want)
    assert [row.named_shape for row in mask.untag("blocks")] == [{"heads": 3}] * 2


# =============================================================== variables
# (the variables parts of penzai's "how to think" and jitting tutorials)


def test_counter_layer_mutates_on_every_call():
    model = Chain([Counter(sk.StateVariable(0, label="count")), Relu()])
    x = sk.nx.wrap(np.array([-1.0, 2.0]), "f")
    for _ in range(3):
        out = model(x)
    assert int(model.sublayers[0].count.value) == 3
    np.testing.assert_array_equal(out.unwrap("f"), [0.0, 2.0])


def test_functional_round_trip_unbind_jit_update():
    counter = sk.StateVariable(jnp.array(0), label="count")
    model, weights = mlp(np.random.RandomState(4))
    model = Chain([Counter(counter), *model.sublayers])
    unbound, variables = sk.unbind_variables(model)
    frozen = [v.freeze() for v in variables]

    @jax.jit
    def run(frozen_values: list, x: Any) -> tuple[Any, list]:
        copies = [value.unfreeze_as_copy() for value in frozen_values]
        out = sk.bind_variables(unbound, copies)(x)
        return out, [c.freeze() for c in copies]

    x = np.random.RandomState(5).randn(6, 3).astype(np.float32)
    out, new_values = run(frozen, sk.nx.wrap(x, "batch", "in"))
    for variable, value in zip(variables, new_values):
        variable.update(value)
    assert int(counter.value) == 1
    np.testing.assert_allclose(
        out.unwrap("batch", "out"), mlp_numpy(x, *weights), rtol=1e-5, atol=1e-5
    )


def test_jitted_init_returns_frozen_values_then_binds_copies():
    def init() -> tuple[Any, tuple]:
        model = Chain(
            [
                Counter(sk.StateVariable(jnp.array(0), label="count")),
                Bias(sk.Parameter(label="b", value=sk.nx.full({"out": 2}, 0.5))),
            ]
        )
        return sk.unbind_variables(model, freeze=True)

    unbound, values = jax.jit(init)()
    assert all(isinstance(v, sk.AbstractVariableValue) for v in values)
    model = sk.bind_variables(unbound, values, unfreeze_as_copy=True)
    assert isinstance(model.sublayers[1].bias, sk.Parameter)
    out = model(sk.nx.zeros({"out": 2}))
    np.testing.assert_array_equal(out.unwrap("out"), [0.5, 0.5])
    assert int(model.sublayers[0].count.value) == 1
    # The frozen values were copied, not shared.
    assert int(values[0].value) == 0


def test_variable_jit_writes_state_back():
    counter = sk.StateVariable(jnp.array(0), label="count")
    model = Chain([Counter(counter), Bias(sk.Parameter(label="b", value=sk.nx.ones({"f": 2})))])
    call = sk.variable_jit(lambda m, x: m(x))
    for expected in (1, 2, 3):
        out = call(model, sk.nx.zeros({"f": 2}))
        assert int(counter.value) == expected
    np.testing.assert_array_equal(out.unwrap("f"), [1.0, 1.0])


def test_variable_jit_with_static_arguments():
    counter = sk.StateVariable(jnp.array(0), label="count")

    def step(c: sk.StateVariable, by: int) -> jax.Array:
        c.value = c.value + by
        return c.value * 2

    jitted = sk.variable_jit(step, static_argnames=("by",))
    assert int(jitted(counter, by=3)) == 6
    assert int(jitted(counter, by=2)) == 10
    assert int(counter.value) == 5


def test_leaves_of_a_model_are_its_variables_and_sharing_is_deduplicated():
    shared = Dense(sk.Parameter(label="w", value=sk.nx.ones({"in": 2, "out": 2})))
    model = Chain([shared, Rename("out", "in"), shared])
    leaves = jax.tree_util.tree_leaves(model)
    assert [type(leaf) for leaf in leaves] == [sk.Parameter, sk.Parameter]
    assert leaves[0] is leaves[1]
    _, params = sk.unbind_params(model)
    assert [p.label for p in params] == ["w"]


def test_shared_parameter_gradients_add_up():
    w = sk.Parameter(label="w", value=jnp.array(3.0))

    @sk.pytree_dataclass
    class Scale(sk.Struct):
        p: Any

        def __call__(self, x: Any) -> Any:
            return x * self.p.value

    model = [Scale(w), Scale(w)]
    unbound, values = sk.unbind_params(model, freeze=True)

    def loss(vals: Any, x: float) -> jax.Array:
        m = sk.bind_variables(unbound, vals)
        return m[1](m[0](x))  # x * w * w

    (grad,) = jax.grad(loss)(values, 2.0)
    np.testing.assert_allclose(grad.value, 2 * 2.0 * 3.0)


def test_gradient_of_frozen_params_matches_numpy():
    rng = np.random.RandomState(6)
    model, (w1, b1, w2, b2) = mlp(rng)
    x = rng.randn(5, 3).astype(np.float32)
    unbound, params = sk.unbind_params(model, freeze=True)

    def loss(vals: Any) -> jax.Array:
        out = sk.bind_variables(unbound, vals)(sk.nx.wrap(x, "batch", "in"))
        return jnp.sum(out.unwrap("batch", "out") ** 2)

    grads = {g.label: g.value for g in jax.grad(loss)(params)}
    h = x @ w1 + b1
    a = np.maximum(h, 0)
    y = a @ w2 + b2
    dy = 2 * y
    np.testing.assert_allclose(grads["l2.b"].unwrap("out"), dy.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["l2.w"].unwrap("in", "out"), a.T @ dy, rtol=1e-4, atol=1e-4)
    dh = (dy @ w2.T) * (h > 0)
    np.testing.assert_allclose(grads["l1.w"].unwrap("in", "out"), x.T @ dh, rtol=1e-4, atol=1e-4)


def test_jvp_through_bound_parameters():
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    model = Chain([dense("w", w)])
    x = np.array([[1.0, -1.0]], np.float32)
    unbound, params = sk.unbind_params(model, freeze=True)

    def f(vals: Any) -> jax.Array:
        out = sk.bind_variables(unbound, vals)(sk.nx.wrap(x, "batch", "in"))
        return jnp.sum(out.unwrap("batch", "out"))

    tangent = jax.tree_util.tree_map(jnp.ones_like, params)
    primal, derivative = jax.jvp(f, (params,), (tangent,))
    np.testing.assert_allclose(primal, (x @ w).sum())
    np.testing.assert_allclose(derivative, (x @ np.ones_like(w)).sum())


def test_stateless_call_with_frozen_params_and_state_values():
    rng = np.random.RandomState(7)
    base, weights = mlp(rng)
    model = (
        sk.select(base)
        .at_instances_of(Relu)
        .insert_after(Capture(sk.StateVariable([], label="hidden")))
    )
    frozen_model, state_values = sk.unbind_state_vars(sk.freeze_params(model), freeze=True)
    assert [v.label for v in state_values] == ["hidden"]

    @jax.jit
    def stateless(values: Any, x: Any) -> tuple[Any, Any]:
        bound = sk.bind_variables(frozen_model, values, unfreeze_as_copy=True)
        out = bound(x)
        return out, sk.unbind_state_vars(bound, freeze=True)[1]

    x = rng.randn(4, 3).astype(np.float32)
    out, (hidden,) = stateless(state_values, sk.nx.wrap(x, "batch", "in"))
    w1, b1, _, _ = weights
    np.testing.assert_allclose(
        out.unwrap("batch", "out"), mlp_numpy(x, *weights), rtol=1e-5, atol=1e-5
    )
    (captured,) = hidden.value
    np.testing.assert_allclose(
        captured.unwrap("batch", "out"), np.maximum(x @ w1 + b1, 0), rtol=1e-5, atol=1e-5
    )
    # The original model's state is untouched by the functional call.
    assert model.sublayers[3].saved.value == []


def test_capture_every_layer_with_fresh_variables():
    model, _ = mlp(np.random.RandomState(8))
    probed = (
        sk.select(model)
        .at_instances_of(Dense)
        .apply_and_inline(lambda layer: [layer, Capture(sk.StateVariable([]))])
    )
    assert [type(layer).__name__ for layer in probed.sublayers] == [
        "Dense", "Capture", "Bias", "Relu", "Rename", "Dense", "Capture", "Bias",
    ]  # fmt: skip
    _, states = sk.unbind_state_vars(probed)
    assert len(states) == 2
    probed(sk.nx.ones({"batch": 2, "in": 3}))
    shapes = [s.value[0].named_shape for s in states]
    assert shapes == [{"batch": 2, "out": 4}, {"batch": 2, "out": 2}]


def test_random_stream_side_input_eager_and_under_variable_jit():
    model = Chain([Relu(), Dropout(0.5)])
    x = sk.nx.ones({"batch": 8, "f": 8})
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    first = model(x, random_stream=stream)
    second = model(x, random_stream=stream)
    assert int(stream.offset.value) == 2
    assert not np.array_equal(first.unwrap("batch", "f"), second.unwrap("batch", "f"))
    values = np.unique(np.asarray(first.unwrap("batch", "f")))
    assert set(values.tolist()) <= {0.0, 2.0}

    fresh = sk.RandomStream.from_base_key(jax.random.key(0))
    jitted = sk.variable_jit(lambda m, x, rs: m(x, random_stream=rs))
    again = jitted(model, x, fresh)
    assert int(fresh.offset.value) == 1
    np.testing.assert_array_equal(again.unwrap("batch", "f"), first.unwrap("batch", "f"))


def test_scoped_auto_labels_are_deterministic():
    def build() -> list:
        with sk.scoped_auto_state_var_labels():
            return [sk.StateVariable(1), sk.StateVariable(2)]

    first, second = build(), build()
    assert [v.label for v in first] == [v.label for v in second]
    assert first[0].label != first[1].label


# ==================================================== common-task recipes
# (penzai's how-to reference, core-only parts)


def test_patch_by_type_and_by_path():
    model, _ = mlp(np.random.RandomState(9))
    no_relu = sk.select(model).at_instances_of(Relu).remove_from_parent()
    assert [type(layer).__name__ for layer in no_relu.sublayers] == [
        "Dense", "Bias", "Rename", "Dense", "Bias",
    ]  # fmt: skip
    replaced = sk.select(model).at(lambda m: m.sublayers[2]).set(Chain([]))
    assert isinstance(replaced.sublayers[2], Chain)
    nested = Chain([model])
    deeper = sk.select(nested).at(lambda m: m.sublayers[0].sublayers[2]).insert_before(Relu())
    assert [type(layer).__name__ for layer in deeper.sublayers[0].sublayers][:4] == [
        "Dense", "Bias", "Relu", "Relu",
    ]  # fmt: skip


def test_freezing_weights_turns_parameters_into_values():
    model, weights = mlp(np.random.RandomState(10))
    frozen = sk.freeze_params(model)
    assert not sk.select(frozen).at_instances_of(sk.Parameter).count()
    assert sk.select(frozen).at_instances_of(sk.ParameterValue).count() == 4
    x = np.ones((1, 3), np.float32)
    out = jax.jit(lambda m, v: m(v))(frozen, sk.nx.wrap(x, "batch", "in"))
    np.testing.assert_allclose(
        out.unwrap("batch", "out"), mlp_numpy(x, *weights), rtol=1e-5, atol=1e-5
    )


def test_unbound_model_repr_round_trips():
    # penzai's "how to think" tutorial copies a printed slot model back as code.
    model, _ = mlp(np.random.RandomState(18))
    unbound, _ = sk.unbind_params(model)
    namespace = {
        "Chain": Chain, "Dense": Dense, "Bias": Bias, "Relu": Relu, "Rename": Rename,
        "ParameterSlot": sk.ParameterSlot,
    }  # fmt: skip
    assert eval(repr(unbound), namespace) == unbound


def test_checkpoint_round_trip_through_numpy_files(tmp_path):
    # The how-to's checkpointing recipe: unbind frozen parameters, save their
    # leaves, and later bind loaded values into a slot model of the same shape.
    model, weights = mlp(np.random.RandomState(20))
    slots, values = sk.unbind_params(model, freeze=True)
    leaves, treedef = jax.tree_util.tree_flatten(values)
    np.savez(tmp_path / "ckpt.npz", *[np.asarray(leaf) for leaf in leaves])
    with np.load(tmp_path / "ckpt.npz") as files:
        loaded = [jnp.asarray(files[f"arr_{i}"]) for i in range(len(leaves))]
    restored = sk.bind_variables(slots, jax.tree_util.tree_unflatten(treedef, loaded))
    x = np.random.RandomState(21).randn(2, 3).astype(np.float32)
    out = restored(sk.nx.wrap(x, "batch", "in"))
    np.testing.assert_allclose(
        out.unwrap("batch", "out"), mlp_numpy(x, *weights), rtol=1e-5, atol=1e-5
    )


def test_model_with_parameter_slots_reports_unbound_reads():
    model, _ = mlp(np.random.RandomState(11))
    slots, _ = sk.unbind_params(model)
    with pytest.raises(sk.UnboundVariableError, match="bind_variables"):
        slots(sk.nx.ones({"in": 3}))


# ====================================================== error messages


def test_nmap_size_mismatch_lists_every_argument():
    a = sk.nx.ones({"batch": 3, "f": 4})
    b = sk.nx.ones({"batch": 5})
    with pytest.raises(ValueError) as info:
        sk.nx.nmap(lambda x, y: x + y)(a, {"nested": b})
    message = str(info.value)
    assert "'batch'" in message
    assert "args[0]: named_shape {'batch': 3, 'f': 4}" in message
    assert "args[1]['nested']: named_shape {'batch': 5}" in message


@pytest.mark.parametrize("op", [lambda p, q: p + q, lambda p, q: p * q, lambda p, q: p == q])
def test_operator_size_mismatch_lists_both_operands(op):
    with pytest.raises(ValueError) as info:
        op(sk.nx.ones({"batch": 3, "f": 4}), sk.nx.zeros({"batch": 5}))
    message = str(info.value)
    assert "{'batch': 3, 'f': 4}" in message and "{'batch': 5}" in message


def test_operator_size_mismatch_under_jit_lists_both_operands():
    with pytest.raises(ValueError, match=r"\{'b': 2\}"):
        jax.jit(lambda p, q: p - q)(sk.nx.zeros({"a": 3, "b": 4}), sk.nx.zeros({"b": 2}))


def test_indexing_size_mismatch_says_it_is_an_indexing_error():
    arr = sk.nx.zeros({"a": 3, "b": 4})
    with pytest.raises(ValueError, match=r"__getitem__.*\n.*'b': 4.*\n.*'b': 2"):
        arr[{"a": sk.nx.wrap(np.array([0, 1]), "b")}]
    with pytest.raises(ValueError, match=r"at\[\.\.\.\]\.set"):
        arr.at[{"a": 0}].set(sk.nx.ones({"b": 5}))


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.insert_after(0),
        lambda s: s.insert_before(0),
        lambda s: s.remove_from_parent(),
        lambda s: s.apply_and_inline(lambda v: [v]),
    ],
)
def test_list_edits_on_a_struct_field_say_how_to_fix(edit):
    @sk.pytree_dataclass
    class Pair(sk.Struct):
        first: Any
        second: Any

    with pytest.raises(ValueError) as info:
        edit(sk.select(Pair(1, 2)).at(lambda p: p.first))
    message = str(info.value)
    assert "Pair.first" in message
    assert "list or tuple" in message
    assert "Sequential" in message


def test_list_edits_on_a_dict_entry_and_on_the_root_say_what_to_do():
    with pytest.raises(ValueError, match=r"\['a'\].*dict.*\.set"):
        sk.select({"a": 1}).at(lambda t: t["a"]).insert_after(2)
    with pytest.raises(ValueError, match=r"root.*no parent"):
        sk.select([1]).remove_from_parent()


def test_bad_pytree_dataclass_names_the_field():
    @sk.pytree_dataclass
    class Parent(sk.Struct):
        inherited: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"\['inherited'\].*not declared"):

        @sk.pytree_dataclass
        class Child(Parent):
            own: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"Bad\.flag.*pytree_node"):

        @sk.pytree_dataclass
        class Bad(sk.Struct):
            flag: int = dataclasses.field(default=0, metadata={"pytree_node": "no"})

    @sk.pytree_dataclass
    class Needy(sk.Struct):
        x: int
        y: int

        def __init__(self, value: int):
            self.x = value

    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"\['y'\]"):
        Needy(1)


def test_two_variables_with_one_label_name_the_label_and_both_places():
    tree = {"a": sk.StateVariable(1, label="shared"), "b": sk.StateVariable(2, label="shared")}
    with pytest.raises(sk.VariableConflictError) as info:
        sk.unbind_variables(tree)
    message = str(info.value)
    assert "'shared'" in message and "['a']" in message and "['b']" in message
    with pytest.raises(sk.VariableConflictError, match="'shared'"):
        sk.variable_jit(lambda t: 0)(tree)
    params = [sk.Parameter(label="p", value=1.0), sk.Parameter(label="p", value=2.0)]
    with pytest.raises(sk.VariableConflictError, match="'p'"):
        sk.unbind_params(params)


def test_check_structure_reports_one_line_per_keypath():
    var = sk.chk.var
    tree = {
        "x": jnp.zeros((2, 3)),
        "y": [jnp.zeros((4,)), sk.nx.zeros({"a": 2, "b": 5})],
        "z": 3,
    }
    pattern = {
        "x": sk.chk.ArraySpec(shape=(var("n"), var("m"))),
        "y": [
            sk.chk.ArraySpec(shape=(var("n"),), dtype=jnp.integer),
            sk.chk.ArraySpec(named_shape={"a": var("n"), "c": 5}),
        ],
        "z": 4,
    }
    with pytest.raises(sk.chk.StructureMismatchError) as info:
        sk.chk.check_structure(tree, pattern)
    lines = str(info.value).splitlines()
    assert "3 keypaths" in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["['y'][0]", "['y'][1]", "['z']"]
    assert "n = 2" in lines[1] and "integer" in lines[1]
    assert "'c'" in lines[2] and "'b'" in lines[2]


# ============================================ JAX transformations and interop


def test_named_arrays_and_structs_through_jit_and_grad():
    w = np.arange(6.0).reshape(3, 2)
    frozen_weight = sk.ParameterValue(label="w", value=sk.nx.wrap(w, "in", "out"), metadata={})
    model = Chain([Dense(frozen_weight)])
    x = sk.nx.wrap(np.array([1.0, 2.0, 3.0]), "in")
    out = jax.jit(lambda m, v: m(v))(model, x)
    np.testing.assert_allclose(out.unwrap("out"), np.array([1.0, 2.0, 3.0]) @ w)
    grads = jax.grad(lambda m: m(x).unwrap("out").sum())(model)
    assert isinstance(grads, Chain)
    np.testing.assert_allclose(
        grads.sublayers[0].weight.value.unwrap("in", "out"), np.tile([[1.0], [2.0], [3.0]], (1, 2))
    )


def test_vmap_output_named_array_gets_a_leading_positional_axis():
    out = jax.vmap(lambda k: sk.nx.wrap(jnp.arange(3.0) * k, "c"))(jnp.arange(4.0))
    assert out.positional_shape == (4,)
    assert out.named_shape == {"c": 3}
    np.testing.assert_array_equal(
        out.tag("k").unwrap("k", "c"), np.outer(np.arange(4.0), np.arange(3.0))
    )


def test_vmap_over_a_leading_positional_axis_of_an_input():
    data = np.arange(24.0).reshape(4, 2, 3)
    x = sk.nx.NamedArray(jnp.asarray(data), axis_names=("a", "b"))
    out = jax.vmap(lambda t: (t * 2).untag("a").sum())(x)
    assert out.positional_shape == (4,) and out.named_shape == {"b": 3}
    np.testing.assert_allclose(out.tag("k").unwrap("k", "b"), 2 * data.sum(1))


def test_vmap_over_an_untagged_axis_needs_a_positional_prefix():
    data = np.arange(12.0).reshape(3, 4)
    x = sk.nx.wrap(data, "a", "b").untag("b")  # positional axis is not leading in memory

    def total(t: Any) -> jax.Array:
        return sk.nx.nmap(jnp.sum)(t.untag("a")).unwrap()

    with pytest.raises(ValueError, match="with_positional_prefix"):
        jax.vmap(total)(x)
    np.testing.assert_allclose(jax.vmap(total)(x.with_positional_prefix()), data.sum(0))


def test_vmap_over_a_named_axis_is_an_error_not_a_wrong_shape():
    x = sk.nx.wrap(np.arange(6.0).reshape(2, 3), "a", "b")
    with pytest.raises(ValueError, match="untag_prefix"):
        jax.vmap(lambda t: t.named_shape)(x)
    with pytest.raises(ValueError, match=r"slice[sd] off"):
        jax.vmap(lambda t: sk.nx.nmap(jnp.sum)(t))(x)
    # The documented fix: make the named axis the leading positional one.
    out = jax.vmap(lambda t: t.named_shape["b"] * t.untag("b").sum())(
        x.untag_prefix("a").with_positional_prefix()
    )
    np.testing.assert_allclose(out.unwrap(), 3 * np.arange(6.0).reshape(2, 3).sum(1))


def test_vmap_with_nonzero_out_axes_is_detected():
    out = jax.vmap(lambda k: sk.nx.wrap(jnp.arange(3.0) * k, "c"), out_axes=1)(jnp.arange(4.0))
    with pytest.raises(ValueError):
        out.named_shape  # noqa: B018  (the read must raise, not report {'c': 4})


def test_nmap_inside_vmap_over_a_model_ensemble():
    # penzai issue 131: a loss written with nmap, vmapped over stacked models.
    rng = np.random.RandomState(12)
    weights = rng.randn(5, 3).astype(np.float32)  # 5 ensemble members, feature axis "a"
    data = rng.randn(3).astype(np.float32)
    stacked = sk.nx.wrap(weights, "member", "a").untag("member")
    x = sk.nx.wrap(data, "a")

    def loss(w: Any) -> jax.Array:
        return sk.nx.nmap(jnp.sum)((w * x).untag("a")).unwrap() ** 2

    values = jax.vmap(loss)(stacked)
    np.testing.assert_allclose(values, (weights @ data) ** 2, rtol=1e-5)
    grads = jax.vmap(jax.grad(loss))(stacked)
    assert grads.positional_shape == (5,) and grads.named_shape == {"a": 3}
    want = 2 * (weights @ data)[:, None] * data[None, :]
    np.testing.assert_allclose(grads.tag("member").unwrap("member", "a"), want, rtol=1e-5)


def test_nmap_collectives_inside_a_named_vmap():
    data = np.arange(6.0).reshape(2, 3)
    x = sk.nx.wrap(data, "batch", "f")

    def centred(t: Any) -> Any:
        # psum over the outer vmap axis, nmap over the named axes inside.
        return sk.nx.nmap(lambda v: v - jax.lax.pmean(v, "ens"))(t)

    out = jax.vmap(centred, axis_name="ens")(
        jax.tree_util.tree_map(lambda *a: jnp.stack(a), x, x * 3)
    )
    np.testing.assert_allclose(out.tag("e").unwrap("e", "batch", "f"), np.stack([-data, data]))


@given(
    lead=st.integers(1, 3),
    a=st.integers(1, 4),
    b=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_vmap_of_nmapped_reduction_matches_numpy(lead, a, b, seed):
    data = np.random.RandomState(seed).randn(lead, a, b).astype(np.float32)
    x = sk.nx.NamedArray(jnp.asarray(data), axis_names=("a", "b"))
    out = jax.vmap(lambda t: sk.nx.nmap(jnp.max)(t.untag("b")))(x)
    assert out.positional_shape == (lead,) and out.named_shape == {"a": a}
    np.testing.assert_allclose(out.tag("k").unwrap("k", "a"), data.max(2))


def test_lax_scan_carries_named_arrays():
    data = np.arange(24.0).reshape(4, 2, 3)
    xs = sk.nx.NamedArray(jnp.asarray(data), axis_names=("a", "b"))

    def body(carry: Any, x: Any) -> tuple[Any, Any]:
        return carry + x, carry * 2

    final, ys = jax.lax.scan(body, sk.nx.zeros({"a": 2, "b": 3}), xs)
    np.testing.assert_allclose(final.unwrap("a", "b"), data.sum(0))
    assert ys.positional_shape == (4,) and ys.named_shape == {"a": 2, "b": 3}
    prefix = np.concatenate([np.zeros((1, 2, 3)), np.cumsum(data, 0)[:-1]])
    np.testing.assert_allclose(ys.tag("t").unwrap("t", "a", "b"), 2 * prefix)


def test_lax_scan_over_stacked_frozen_layers():
    # A hand-made layer stack: identical layers stacked along a leading
    # positional axis, applied in turn by jax.lax.scan.
    rng = np.random.RandomState(19)
    ws = rng.randn(3, 4, 4).astype(np.float32) / 2
    layers = [
        Chain([Dense(sk.ParameterValue(label="w", value=sk.nx.wrap(w, "in", "out"), metadata={})),
               Relu(), Rename("out", "in")])
        for w in ws
    ]  # fmt: skip
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)
    assert stacked.sublayers[0].weight.value.positional_shape == (3,)
    x = rng.randn(2, 4).astype(np.float32)

    def step(h: Any, layer: Chain) -> tuple[Any, Any]:
        out = layer(h)
        return out, out.untag("in").sum()

    final, sums = jax.lax.scan(step, sk.nx.wrap(x, "batch", "in"), stacked)
    want = x
    want_sums = []
    for w in ws:
        want = np.maximum(want @ w, 0)
        want_sums.append(want.sum(1))
    np.testing.assert_allclose(final.unwrap("batch", "in"), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        sums.tag("layer").unwrap("layer", "batch"), np.stack(want_sums), rtol=1e-5, atol=1e-5
    )


def test_eval_shape_of_named_computations():
    x = sk.nx.wrap(np.ones((2, 3), np.float32), "a", "b")
    shape = jax.eval_shape(lambda t: t.untag("a") * 2, x)
    assert isinstance(shape, sk.nx.NamedArray)
    assert shape.positional_shape == (2,) and shape.named_shape == {"b": 3}
    assert isinstance(shape.data_array, jax.ShapeDtypeStruct)
    checked = sk.chk.check_structure(
        shape, sk.chk.ArraySpec(shape=(sk.chk.var("p"),), named_shape={"b": 3})
    )
    assert checked["p"] == 2


def test_eval_shape_of_a_frozen_init():
    def init() -> tuple[Any, tuple]:
        model = {"w": sk.Parameter(label="w", value=jnp.zeros((1000, 1000)))}
        return sk.unbind_variables(model, freeze=True)

    unbound, values = jax.eval_shape(init)
    model = sk.bind_variables(unbound, values, unfreeze_as_copy=True)
    assert model["w"].value.shape == (1000, 1000)
    assert isinstance(model["w"].value, jax.ShapeDtypeStruct)


_SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from saikei import sk

    assert jax.device_count() == 8, jax.device_count()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    data = np.arange(64.0, dtype=np.float32).reshape(8, 8)
    x = sk.nx.wrap(data, "batch", "features")
    # A NamedArray whose leaf is a sharding mirrors the array's tree.
    spec = sk.nx.NamedArray(NamedSharding(mesh, P("data", "model")), axis_names=x.axis_names)
    y = jax.device_put(x, spec)
    assert y.named_shape == {"batch": 8, "features": 8}
    assert y.data_array.sharding.spec == P("data", "model")
    total = jax.jit(lambda t: sk.nx.nmap(jnp.sum)(t.untag("features")))(y)
    np.testing.assert_allclose(total.unwrap("batch"), data.sum(1))

    def constrained(t):
        t = t * 2
        target = NamedSharding(mesh, P("model", "data"))
        return jax.lax.with_sharding_constraint(
            t, sk.nx.NamedArray(target, axis_names=t.axis_names)
        )

    z = jax.jit(constrained)(x)
    assert z.data_array.sharding.spec == P("model", "data")
    np.testing.assert_allclose(z.unwrap("batch", "features"), 2 * data)
    view = x.untag("features")
    v = jax.device_put(view, sk.nx.NamedArray(NamedSharding(mesh, P("data", None)), view.axis_names))
    assert v.positional_shape == (8,) and v.data_array.sharding.spec == P("data", None)
    print("OK")
    """
)


def test_named_array_sharding_on_a_multi_device_cpu_mesh():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", _SHARDING_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


# ================================================ consistency across modules


def test_selection_over_a_model_holding_named_arrays_and_variables():
    model, _ = mlp(np.random.RandomState(13))
    model = Chain([*model.sublayers, Counter(sk.StateVariable(jnp.array(0), label="n"))])
    # Variables are leaves: the NamedArrays inside them are not tree nodes.
    assert sk.select(model).at_instances_of(sk.nx.NamedArray).count() == 0
    assert sk.select(model).at_instances_of(sk.Parameter).count() == 4
    frozen = sk.freeze_variables(model)
    # Once frozen, the values (and their NamedArrays) are part of the tree.
    named = sk.select(frozen).at_instances_of(sk.nx.NamedArray)
    assert named.count() == 4
    untagged = named.apply(lambda a: a.canonicalize())
    assert sk.select(untagged).at_instances_of(sk.nx.NamedArray).count() == 4
    # Looking for a NamedArray by equality is refused, as for any array.
    with pytest.raises(ValueError, match="array"):
        sk.select(frozen).at_equal_to(named.get_sequence()[0])


def test_unbind_and_bind_variables_on_a_selection():
    model, _ = mlp(np.random.RandomState(14))
    sel = sk.select(model).at_instances_of(Dense)
    unbound, variables = sk.unbind_variables(sel)
    assert isinstance(unbound, sk.Selection)
    # A Selection flattens its selected subtrees first, then the remainder.
    assert [v.label for v in variables] == ["l1.w", "l2.w", "l1.b", "l2.b"]
    assert sk.select(unbound).at_instances_of(sk.ParameterSlot).count() == 4
    rebound = sk.bind_variables(unbound, variables)
    assert rebound.deselect() == model
    frozen_sel = sk.freeze_params(sel)
    assert isinstance(frozen_sel.get_sequence()[0].weight, sk.ParameterValue)


def test_partition_and_combine_around_variables():
    model, _ = mlp(np.random.RandomState(15))
    params, rest = sk.select(model).at_instances_of(sk.Parameter).partition()
    assert sk.select(rest).at_instances_of(sk.Parameter).count() == 0
    rebuilt = sk.combine(params, rest)
    assert rebuilt.sublayers[0].weight is model.sublayers[0].weight


def test_check_structure_on_nmap_outputs_and_views():
    model, _ = mlp(np.random.RandomState(16))
    out = model(sk.nx.ones({"batch": 5, "in": 3}))
    var = sk.chk.var
    match = sk.chk.check_structure(
        out, sk.chk.ArraySpec(named_shape={"batch": var("B"), "out": 2}, dtype=jnp.floating)
    )
    assert dict(match) == {"B": 5}
    match = sk.chk.check_structure(
        out.untag("out"), sk.chk.ArraySpec(shape=(var("o"),), named_shape={**var("rest")})
    )
    assert match["o"] == 2 and match["rest"] == {"batch": 5}
    with pytest.raises(sk.chk.StructureMismatchError, match="out is 2, expected 3"):
        sk.chk.check_structure(out, sk.chk.ArraySpec(named_shape={"batch": 5, "out": 3}))


def test_check_structure_on_frozen_parameter_values():
    model, _ = mlp(np.random.RandomState(17))
    _, values = sk.unbind_params(model, freeze=True)
    var = sk.chk.var
    pattern = sk.ParameterValue(
        label="l1.w",
        value=sk.chk.ArraySpec(named_shape={"in": var("i"), "out": var("o")}),
        metadata={},
    )
    assert dict(sk.chk.check_structure(values[0], pattern)) == {"i": 3, "o": 4}


def test_selection_survives_jit_as_a_pytree():
    sel = sk.select([jnp.ones(2), 3.0]).at_children()
    out = jax.jit(lambda s: s.apply(lambda v: v + 1))(sel)
    np.testing.assert_array_equal(out[0], [2.0, 2.0])
    assert float(out[1]) == 4.0
