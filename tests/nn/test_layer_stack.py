"""Tests for sk.nn.LayerStack: scanning, state, building, keypaths and errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

STACK = "layers"
PER_LAYER = sk.nn.LayerStackVarBehavior.PER_LAYER
SHARED = sk.nn.LayerStackVarBehavior.SHARED


def mlp_block(init_base_rng: Any, width: int = 4, hidden: int = 6, name: str = "block") -> Any:
    """A residual MLP block: x + Linear(relu(Affine(x)))."""
    return sk.nn.Residual(
        sk.nn.Sequential(
            [
                sk.nn.Affine.from_config(
                    name=f"{name}/up",
                    init_base_rng=init_base_rng,
                    input_axes={"features": width},
                    output_axes={"hidden": hidden},
                    bias_initializer=lambda key, **axes: sk.nx.wrap(
                        0.1 * jax.random.normal(key, (hidden,)), "hidden"
                    ),
                ),
                sk.nn.Elementwise(jax.nn.relu),
                sk.nn.Linear.from_config(
                    name=f"{name}/down",
                    init_base_rng=init_base_rng,
                    input_axes={"hidden": hidden},
                    output_axes={"features": width},
                ),
            ]
        )
    )


def stacked_weights(stack: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(up weights [L, F, H], up bias [L, H], down weights [L, H, F]) as numpy."""
    params = {p.label: p.value for p in sk.unbind_params(stack)[1]}
    return (
        np.asarray(params["block/up/Linear.weights"].unwrap(STACK, "features", "hidden")),
        np.asarray(params["block/up/AddBias.bias"].unwrap(STACK, "hidden")),
        np.asarray(params["block/down.weights"].unwrap(STACK, "hidden", "features")),
    )


def numpy_mlp_stack(x: np.ndarray, w_up: np.ndarray, b_up: np.ndarray, w_down: np.ndarray):
    for layer in range(w_up.shape[0]):
        x = x + np.maximum(x @ w_up[layer] + b_up[layer], 0.0) @ w_down[layer]
    return x


def make_input(batch: int = 3, width: int = 4, seed: int = 1) -> tuple[Any, np.ndarray]:
    data = np.random.default_rng(seed).normal(size=(batch, width)).astype(np.float32)
    return sk.nx.wrap(jnp.asarray(data), "batch", "features"), data


def build_stack(n: int = 3, rng: Any = 0, **kwargs: Any) -> Any:
    key = None if rng is None else jax.random.key(rng)
    return sk.nn.LayerStack.from_sublayer_builder(mlp_block, STACK, n, key, kwargs)


@sk.pytree_dataclass
class AddBias(sk.nn.Layer):
    bias: Any

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        return x + self.bias.value


# Numerics ----------------------------------------------------------------------------


def test_stack_matches_numpy_oracle():
    stack = build_stack(4)
    x, x_np = make_input()
    out = stack(x)
    expected = numpy_mlp_stack(x_np, *stacked_weights(stack))
    np.testing.assert_allclose(np.asarray(out.unwrap("batch", "features")), expected, atol=1e-5)


def test_stack_matches_plain_list_of_sliced_blocks():
    stack = build_stack(5)
    x, _ = make_input()

    def take_slice(value: Any, i: int) -> Any:
        return value[{STACK: i}]

    blocks = []
    for i in range(5):
        block = (
            sk.select(stack.stacked_sublayers)
            .at_instances_of(sk.Parameter)
            .apply(
                lambda p, i=i: sk.Parameter(label=f"{p.label}/{i}", value=take_slice(p.value, i))
            )
        )
        blocks.append(block)
    plain = sk.nn.Sequential(blocks)
    np.testing.assert_allclose(
        np.asarray(stack(x).unwrap("batch", "features")),
        np.asarray(plain(x).unwrap("batch", "features")),
        atol=1e-5,
    )


def test_gradients_match_plain_jax_loop():
    stack = build_stack(3)
    x, x_np = make_input()
    unbound, params = sk.unbind_params(stack, freeze=True)

    def loss(params: Any) -> Any:
        out = unbound.bind_variables(params)(x)
        return jnp.sum(jnp.sin(out.unwrap("batch", "features")))

    grads = {g.label: g.value for g in jax.grad(loss)(params)}

    def reference_loss(w_up: Any, b_up: Any, w_down: Any) -> Any:
        h = jnp.asarray(x_np)
        for layer in range(w_up.shape[0]):
            h = h + jax.nn.relu(h @ w_up[layer] + b_up[layer]) @ w_down[layer]
        return jnp.sum(jnp.sin(h))

    expected = jax.grad(reference_loss, argnums=(0, 1, 2))(
        *map(jnp.asarray, stacked_weights(stack))
    )
    got = (
        grads["block/up/Linear.weights"].unwrap(STACK, "features", "hidden"),
        grads["block/up/AddBias.bias"].unwrap(STACK, "hidden"),
        grads["block/down.weights"].unwrap(STACK, "hidden", "features"),
    )
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5)


def test_jit_and_stateless_call_match_eager():
    stack = build_stack(3)
    x, x_np = make_input()
    unbound, params = sk.unbind_params(stack, freeze=True)
    jitted = jax.jit(lambda params, x: unbound.stateless_call(params, x)[0])
    expected = numpy_mlp_stack(x_np, *stacked_weights(stack))
    np.testing.assert_allclose(
        np.asarray(jitted(params, x).unwrap("batch", "features")), expected, atol=1e-5
    )


def test_unroll_does_not_change_the_result():
    stack = build_stack(4)
    x, _ = make_input()
    unrolled = dataclasses.replace(stack, unroll=2)
    np.testing.assert_allclose(
        np.asarray(stack(x).unwrap("batch", "features")),
        np.asarray(unrolled(x).unwrap("batch", "features")),
        atol=1e-6,
    )


@settings(max_examples=10, deadline=None)
@given(
    n=st.integers(1, 5),
    width=st.integers(1, 4),
    hidden=st.integers(1, 5),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_property_stack_matches_numpy(n, width, hidden, batch, seed):
    stack = sk.nn.LayerStack.from_sublayer_builder(
        mlp_block, STACK, n, jax.random.key(seed), {"width": width, "hidden": hidden}
    )
    x, x_np = make_input(batch, width, seed)
    expected = numpy_mlp_stack(x_np, *stacked_weights(stack))
    got = np.asarray(stack(x).unwrap("batch", "features"))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_arrays_without_the_stack_axis_are_shared_by_every_layer():
    bias = np.array([1.0, 2.0], np.float32)
    stack = sk.nn.LayerStack(
        AddBias(sk.Parameter(label="b", value=sk.nx.wrap(jnp.asarray(bias), "f"))), STACK, 3
    )
    out = stack(sk.nx.zeros({"f": 2}))
    np.testing.assert_allclose(np.asarray(out.unwrap("f")), 3 * bias)


# The scan is rolled --------------------------------------------------------------------


def _scan_equations(jaxpr: Any) -> list[Any]:
    return [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]


@pytest.mark.parametrize("n", [2, 8])
def test_the_scan_is_not_unrolled(n):
    stack = build_stack(n)
    x, _ = make_input()
    unbound, params = sk.unbind_params(stack, freeze=True)
    jaxpr = jax.make_jaxpr(lambda p, x: unbound.bind_variables(p)(x))(params, x).jaxpr
    scans = _scan_equations(jaxpr)
    assert len(scans) == 1
    assert scans[0].params["length"] == n
    assert scans[0].params["unroll"] == 1
    body = scans[0].params["jaxpr"].jaxpr
    dots = [eqn for eqn in body.eqns if eqn.primitive.name == "dot_general"]
    assert len(dots) == 2  # one block: up and down projections


def test_compiled_size_does_not_grow_with_depth():
    x, _ = make_input()

    def body_size(n: int) -> int:
        unbound, params = sk.unbind_params(build_stack(n), freeze=True)
        jaxpr = jax.make_jaxpr(lambda p, x: unbound.bind_variables(p)(x))(params, x).jaxpr
        return len(_scan_equations(jaxpr)[0].params["jaxpr"].jaxpr.eqns)

    assert body_size(2) == body_size(16)


# State -----------------------------------------------------------------------------------


@sk.pytree_dataclass
class CountCalls(sk.nn.Layer):
    calls: Any

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        self.calls.value = self.calls.value + 1
        return x


@sk.pytree_dataclass
class RecordAndScale(sk.nn.Layer):
    """Scales by a per-layer parameter and records the input sum in per-layer state."""

    scale: Any
    seen: Any

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        self.seen.value = self.seen.value + x.unwrap("f").sum()
        return x * self.scale.value


def test_shared_state_is_carried_through_every_layer():
    counter = sk.StateVariable(
        sk.nx.wrap(jnp.asarray(0)), label="calls", metadata={"layerstack_axes": {STACK: SHARED}}
    )
    stack = sk.nn.LayerStack(CountCalls(counter), STACK, 4)
    stack(sk.nx.zeros({"f": 2}))
    assert int(counter.value.unwrap()) == 4


def test_per_layer_state_is_sliced_and_restacked():
    scales = np.array([2.0, 3.0, 0.5], np.float32)
    seen = sk.StateVariable(
        sk.nx.zeros({STACK: 3}), label="seen", metadata={"layerstack_axes": {STACK: PER_LAYER}}
    )
    stack = sk.nn.LayerStack(
        RecordAndScale(
            sk.Parameter(label="scale", value=sk.nx.wrap(jnp.asarray(scales), STACK)), seen
        ),
        STACK,
        3,
    )
    x = np.array([1.0, 1.0], np.float32)
    stack(sk.nx.wrap(jnp.asarray(x), "f"))
    expected_inputs = [x.sum(), x.sum() * 2.0, x.sum() * 6.0]
    np.testing.assert_allclose(np.asarray(seen.value.unwrap(STACK)), expected_inputs)
    assert seen.value.named_shape == {STACK: 3}


def test_per_layer_state_keeps_its_memory_layout():
    seen = sk.StateVariable(
        sk.nx.zeros({"extra": 2, STACK: 3}),
        label="seen",
        metadata={"layerstack_axes": {STACK: PER_LAYER}},
    )
    stack = sk.nn.LayerStack(
        RecordAndScale(sk.Parameter(label="scale", value=sk.nx.ones({STACK: 3})), seen), STACK, 3
    )
    stack(sk.nx.ones({"f": 2}))
    assert seen.value.axis_names == ("extra", STACK)
    np.testing.assert_allclose(np.asarray(seen.value.unwrap("extra", STACK)), np.full((2, 3), 2.0))


@sk.pytree_dataclass
class AddNoise(sk.nn.Layer):
    def __call__(self, x: Any, /, *, rng: Any, **side_inputs: Any) -> Any:
        return x + sk.nx.wrap(jax.random.normal(rng.next_key()))


def test_side_input_state_is_a_shared_carry():
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    stack = sk.nn.LayerStack(AddNoise(), STACK, 3)
    out = stack(sk.nx.wrap(0.0), rng=stream)
    assert int(stream.offset.value) == 3
    base = jax.random.key(0)
    expected = sum(float(jax.random.normal(jax.random.fold_in(base, i))) for i in range(3))
    np.testing.assert_allclose(float(out.unwrap()), expected, rtol=1e-5)


def test_stateless_call_threads_state_functionally():
    counter = sk.StateVariable(
        sk.nx.wrap(jnp.asarray(0)), label="calls", metadata={"layerstack_axes": {STACK: SHARED}}
    )
    stack, values = sk.unbind_state_vars(
        sk.nn.LayerStack(CountCalls(counter), STACK, 5), freeze=True
    )
    _, new_values = jax.jit(stack.stateless_call)(values, sk.nx.zeros({"f": 1}))
    assert int(new_values[0].value.unwrap()) == 5
    assert int(counter.value.unwrap()) == 0


def test_parameters_are_read_only_inside_the_stack():
    @sk.pytree_dataclass
    class WritesParameter(sk.nn.Layer):
        w: Any

        def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
            self.w.value = self.w.value + 1
            return x

    stack = sk.nn.LayerStack(
        WritesParameter(sk.Parameter(label="w", value=sk.nx.zeros({STACK: 2}))), STACK, 2
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stack(sk.nx.zeros({"f": 1}))


# Building ------------------------------------------------------------------------------------


def test_builder_initializes_each_layer_independently():
    stack = build_stack(4)
    w_up, _, _ = stacked_weights(stack)
    assert w_up.shape == (4, 4, 6)
    for i in range(1, 4):
        assert not np.allclose(w_up[0], w_up[i])


def test_builder_is_reproducible_and_keeps_labels():
    a, b = build_stack(3, rng=7), build_stack(3, rng=7)
    labels_a = sorted(p.label for p in sk.unbind_params(a)[1])
    assert labels_a == ["block/down.weights", "block/up/AddBias.bias", "block/up/Linear.weights"]
    for wa, wb in zip(stacked_weights(a), stacked_weights(b)):
        np.testing.assert_array_equal(wa, wb)


def test_builder_without_rng_builds_slots_that_take_stacked_values():
    initialized = build_stack(3)
    slots = build_stack(3, rng=None)
    _, params = sk.unbind_params(initialized)
    assert {type(leaf) for leaf in jax.tree_util.tree_leaves(slots)} <= {sk.ParameterSlot}
    x, _ = make_input()
    rebound = slots.bind_variables(params)
    np.testing.assert_allclose(
        np.asarray(rebound(x).unwrap("batch", "features")),
        np.asarray(initialized(x).unwrap("batch", "features")),
    )


def test_builder_variables_from_kwargs_are_shared_not_stacked():
    shared = sk.Parameter(label="shared_bias", value=sk.nx.ones({"f": 2}))

    def builder(init_base_rng: Any, bias: Any) -> Any:
        return AddBias(bias)

    stack = sk.nn.LayerStack.from_sublayer_builder(
        builder, STACK, 3, jax.random.key(0), {"bias": shared}
    )
    assert stack.stacked_sublayers.bias is shared
    np.testing.assert_allclose(np.asarray(stack(sk.nx.zeros({"f": 2})).unwrap("f")), [3.0, 3.0])


def test_builder_state_becomes_per_layer_and_shared_state_stays_shared():
    def builder(init_base_rng: Any) -> Any:
        return sk.nn.Sequential(
            [
                CountCalls(
                    sk.StateVariable(
                        sk.nx.wrap(jnp.asarray(0)),
                        label="total",
                        metadata={"layerstack_axes": {STACK: SHARED}},
                    )
                ),
                CountCalls(sk.StateVariable(sk.nx.wrap(jnp.asarray(0)), label="mine")),
            ]
        )

    stack = sk.nn.LayerStack.from_sublayer_builder(builder, STACK, 3, jax.random.key(0), {})
    total, mine = (layer.calls for layer in stack.stacked_sublayers.sublayers)
    assert total.value.named_shape == {}
    assert mine.value.named_shape == {STACK: 3}
    assert mine.metadata["layerstack_axes"] == {STACK: PER_LAYER}
    stack(sk.nx.zeros({"f": 1}))
    assert int(total.value.unwrap()) == 3
    np.testing.assert_array_equal(np.asarray(mine.value.unwrap(STACK)), [1, 1, 1])


def test_builder_rejects_variables_that_are_not_namedarrays():
    def builder(init_base_rng: Any) -> Any:
        return AddBias(sk.nn.make_parameter("b", init_base_rng, lambda k: jnp.zeros(2)))

    with pytest.raises(TypeError, match=r"'b'.*must be made of\s+NamedArrays"):
        sk.nn.LayerStack.from_sublayer_builder(builder, STACK, 2, jax.random.key(0), {})


def test_builder_rejects_plain_arrays_that_depend_on_the_key():
    @sk.pytree_dataclass
    class HoldsArray(sk.nn.Layer):
        table: Any

        def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
            return x

    def builder(init_base_rng: Any) -> Any:
        return HoldsArray(jax.random.normal(init_base_rng, (2,)))

    with pytest.raises(ValueError, match=r"depends on\s+init_base_rng.*HoldsArray\.table"):
        sk.nn.LayerStack.from_sublayer_builder(builder, STACK, 2, jax.random.key(0), {})


def test_builder_keeps_plain_constants_unstacked():
    @sk.pytree_dataclass
    class HoldsArray(sk.nn.Layer):
        table: Any

        def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
            return x

    stack = sk.nn.LayerStack.from_sublayer_builder(
        lambda init_base_rng: HoldsArray(jnp.arange(3.0)), STACK, 2, jax.random.key(0), {}
    )
    assert stack.stacked_sublayers.table.shape == (3,)


def test_nested_stacks_scan_both_axes():
    def inner(init_base_rng: Any) -> Any:
        return sk.nn.LayerStack.from_sublayer_builder(
            lambda init_base_rng: AddBias(
                sk.nn.make_parameter(
                    "b", init_base_rng, lambda k: sk.nx.wrap(jax.random.normal(k, ()))
                )
            ),
            "inner",
            3,
            init_base_rng,
            {},
        )

    outer = sk.nn.LayerStack.from_sublayer_builder(inner, "outer", 2, jax.random.key(0), {})
    param = outer.stacked_sublayers.stacked_sublayers.bias
    assert param.value.named_shape == {"outer": 2, "inner": 3}
    out = outer(sk.nx.wrap(1.0))
    # The scan adds the biases one at a time in stack order (outer, then inner),
    # so the float32 sum in that order is the exact expectation.
    expected = np.float32(1.0)
    for bias in np.asarray(param.value.unwrap("outer", "inner")).reshape(-1):
        expected = np.float32(expected + bias)
    assert float(out.unwrap()) == float(expected)
    path = jax.tree_util.tree_flatten_with_path(outer)[0][0][0]
    assert sk.nn.layerstack_axes_from_keypath(path) == {"outer": 2, "inner": 3}


# Keypaths, selection, rendering ------------------------------------------------------------------


def test_keypaths_are_readable_and_carry_the_stack_axis():
    stack = build_stack(3)
    paths = [
        path
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            stack, is_leaf=lambda x: isinstance(x, sk.Parameter)
        )[0]
    ]
    first = paths[0]
    assert isinstance(first[0], sk.nn.LayerStackGetAttrKey)
    assert first[0] == sk.nn.LayerStackGetAttrKey("stacked_sublayers", STACK, 3)
    assert (
        jax.tree_util.keystr(first) == ".stacked_sublayers.delta.sublayers[0].sublayers[0].weights"
    )
    assert sk.pretty_keystr(first, stack).startswith("LayerStack.stacked_sublayers/Residual.delta")
    assert sk.nn.layerstack_axes_from_keypath(first) == {STACK: 3}
    assert sk.nn.layerstack_axes_from_keypath(first[1:]) == {}


def test_selecting_inside_the_prototype_patches_every_layer():
    stack = build_stack(3)
    patched = sk.select(stack).at_instances_of(sk.nn.Elementwise).set(sk.nn.Elementwise(jnp.tanh))
    assert isinstance(patched, sk.nn.LayerStack)
    x, x_np = make_input()
    w_up, b_up, w_down = stacked_weights(stack)
    expected = x_np
    for layer in range(3):
        expected = expected + np.tanh(expected @ w_up[layer] + b_up[layer]) @ w_down[layer]
    np.testing.assert_allclose(
        np.asarray(patched(x).unwrap("batch", "features")), expected, atol=1e-5
    )


def test_unbind_and_bind_round_trip():
    stack = build_stack(2)
    unbound, variables = sk.unbind_variables(stack)
    assert len(variables) == 3
    assert sk.bind_variables(unbound, variables) == stack


def test_renders_with_treescope():
    text = treescope.render_to_text(build_stack(2))
    assert "LayerStack" in text and "stack_axis='layers'" in text


# Errors -----------------------------------------------------------------------------------------


def test_state_without_layerstack_metadata_is_an_error():
    stack = sk.nn.LayerStack(CountCalls(sk.StateVariable(sk.nx.wrap(0), label="n")), STACK, 2)
    with pytest.raises(
        ValueError, match=r"'n' at LayerStack.stacked_sublayers/CountCalls\.calls.*layerstack_axes"
    ):
        stack(sk.nx.zeros({"f": 1}))


def test_per_layer_state_without_the_stack_axis_is_an_error():
    seen = sk.StateVariable(
        sk.nx.zeros({}), label="seen", metadata={"layerstack_axes": {STACK: PER_LAYER}}
    )
    stack = sk.nn.LayerStack(CountCalls(seen), STACK, 2)
    with pytest.raises(ValueError, match=r"PER_LAYER state 'seen'.*axis 'layers'"):
        stack(sk.nx.zeros({"f": 1}))


def test_stacked_array_of_the_wrong_size_is_an_error():
    stack = sk.nn.LayerStack(
        AddBias(sk.Parameter(label="b", value=sk.nx.zeros({STACK: 3}))), STACK, 2
    )
    with pytest.raises(ValueError, match=r"AddBias\.bias.*size 3.*stack_axis_size=2"):
        stack(sk.nx.zeros({"f": 1}))


def test_layer_that_changes_the_shape_is_an_error():
    @sk.pytree_dataclass
    class Grow(sk.nn.Layer):
        def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
            return sk.nx.nmap(lambda v: jnp.concatenate([v, v]))(x.untag("f")).tag("f")

    stack = sk.nn.LayerStack(Grow(), STACK, 2)
    with pytest.raises(ValueError, match="structure, shapes and dtypes"):
        stack(sk.nx.zeros({"f": 1}))


def test_variables_in_the_argument_are_an_error():
    stack = sk.nn.LayerStack(sk.nn.Identity(), STACK, 2)
    with pytest.raises(ValueError, match=r"Pass variables\s+as side inputs"):
        stack({"x": sk.StateVariable(0, label="v")})


@pytest.mark.parametrize("field,value", [("stack_axis_size", 0), ("unroll", 0)])
def test_bad_sizes_are_rejected(field, value):
    kwargs = {"stack_axis_size": 2, "unroll": 1, field: value}
    with pytest.raises(ValueError, match=field):
        sk.nn.LayerStack(sk.nn.Identity(), STACK, **kwargs)


@sk.pytree_dataclass
class _RecordIndex(sk.nn.Layer):
    """Appends 10 * outer index + inner index (from the stack's side input) to a list."""

    def __call__(self, x, /, **side_inputs):
        index = side_inputs["layerstack_index"]
        value = 10 * index.get("outer", 0) + index["inner"]
        return {"seen": x["seen"].at[x["count"]].set(value), "count": x["count"] + 1}


def test_each_layer_is_told_its_index_and_the_enclosing_stacks():
    inner = sk.nn.LayerStack(_RecordIndex(), stack_axis="inner", stack_axis_size=3)
    start = {"seen": jnp.full((6,), -1, jnp.int32), "count": jnp.int32(0)}
    assert inner(start)["seen"].tolist() == [0, 1, 2, -1, -1, -1]
    outer = sk.nn.LayerStack(inner, stack_axis="outer", stack_axis_size=2)
    assert jax.jit(outer)(start)["seen"].tolist() == [0, 1, 2, 10, 11, 12]


def test_a_side_input_that_takes_the_stacks_index_name_is_an_error():
    stack = sk.nn.LayerStack(_RecordIndex(), stack_axis="inner", stack_axis_size=3)
    start = {"seen": jnp.zeros((3,), jnp.int32), "count": jnp.int32(0)}
    with pytest.raises(TypeError, match="'layerstack_index' is the LayerStack's own"):
        stack(start, layerstack_index=5)
