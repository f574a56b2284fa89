"""Tests for the base layers: basic ops, grouping, combinators, parameters and Layer."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope

from saikei import sk


def _np(array, *names):
    return np.asarray(array.unwrap(*names), dtype=np.float64)


def _random(names_sizes, seed=0):
    data = np.random.default_rng(seed).normal(size=tuple(names_sizes.values())).astype(np.float32)
    return data, sk.nx.wrap(data, *names_sizes)


@sk.pytree_dataclass
class _RecordSideInputs(sk.nn.Layer):
    """Passes the side inputs it sees to a callback."""

    record: Any = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, x, /, **side_inputs):
        self.record(dict(side_inputs))
        return x


@sk.pytree_dataclass
class _Scale(sk.nn.Layer):
    factor: Any

    def __call__(self, x, /, **side_inputs):
        return x * self.factor.value


@sk.pytree_dataclass
class _CountCalls(sk.nn.Layer):
    calls: sk.StateVariable

    def __call__(self, x, /, **side_inputs):
        self.calls.value = self.calls.value + 1
        return x + 1.0


# -------------------------------------------------------------- basic ops


def test_elementwise_on_named_and_plain_arrays():
    data, x = _random({"a": 2, "b": 3})
    np.testing.assert_allclose(
        _np(sk.nn.Elementwise(jnp.tanh)(x), "a", "b"), np.tanh(data), rtol=1e-6
    )
    np.testing.assert_allclose(sk.nn.Elementwise(jnp.abs)(jnp.asarray(data)), np.abs(data))


def test_elementwise_with_an_arbitrary_python_function():
    data, x = _random({"a": 4})
    out = sk.nn.Elementwise(lambda v: v * 2 + 1)(x)
    np.testing.assert_allclose(_np(out, "a"), data * 2 + 1, rtol=1e-6)


def test_softmax_over_one_and_two_axes():
    data, x = _random({"q": 2, "k": 3, "h": 4})
    one = _np(sk.nn.Softmax("k")(x), "q", "k", "h")
    expected = np.exp(data) / np.exp(data).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(one, expected, rtol=1e-5)
    two = _np(sk.nn.Softmax(("k", "h"))(x), "q", "k", "h")
    expected = np.exp(data) / np.exp(data).sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(two, expected, rtol=1e-5)


def test_softmax_missing_axis_is_an_error():
    with pytest.raises(ValueError, match=r"no axis \['z'\]"):
        sk.nn.Softmax("z")(sk.nx.ones({"a": 2}))


def test_cast_to_dtype_casts_every_array_leaf():
    tree = {"x": sk.nx.ones({"a": 2}), "y": jnp.ones(3), "z": "text"}
    out = sk.nn.CastToDType(jnp.bfloat16)(tree)
    assert out["x"].dtype == jnp.bfloat16
    assert out["y"].dtype == jnp.bfloat16
    assert out["z"] == "text"


def test_tanh_soft_cap():
    data = _random({"a": 5})[0] * 50
    out = sk.nn.TanhSoftCap(soft_cap=3.0)(sk.nx.wrap(data, "a"))
    np.testing.assert_allclose(_np(out, "a"), np.tanh(data / 3.0) * 3.0, rtol=1e-5)
    np.testing.assert_allclose(
        sk.nn.TanhSoftCap(soft_cap=2.0)(jnp.asarray(data)), np.tanh(data / 2.0) * 2.0, rtol=1e-5
    )


# --------------------------------------------------------------- grouping


def test_sequential_runs_in_order():
    model = sk.nn.Sequential(
        [sk.nn.Elementwise(lambda v: v + 1), sk.nn.Elementwise(lambda v: v * 3)]
    )
    np.testing.assert_allclose(model(jnp.array([1.0])), [6.0])


def test_side_inputs_reach_every_nested_layer():
    seen = []
    recorder = _RecordSideInputs(seen.append)
    model = sk.nn.Sequential(
        [
            recorder,
            sk.nn.NamedGroup("g", [recorder, sk.nn.Residual(recorder)]),
            sk.nn.BranchAndAddTogether([recorder, sk.nn.Identity()]),
            sk.nn.BranchAndMultiplyTogether([recorder, sk.nn.Identity()]),
        ]
    )
    model(jnp.ones(()), token_positions="pos", other=3)
    assert seen == [{"token_positions": "pos", "other": 3}] * 5


def test_layers_ignore_unused_side_inputs():
    model = sk.nn.Sequential([sk.nn.Identity(), sk.nn.Softmax("a"), sk.nn.CastToDType(jnp.float32)])
    assert dict(model(sk.nx.ones({"a": 2}), unused=1).named_shape) == {"a": 2}


def test_named_group_and_identity():
    group = sk.nn.NamedGroup("block", [sk.nn.Identity(), sk.nn.Elementwise(jnp.negative)])
    np.testing.assert_allclose(group(jnp.array([2.0])), [-2.0])
    assert group.name == "block"


def test_checked_sequential_checks_input_and_output_with_shared_variables():
    n = sk.chk.var("n")
    layer = sk.nn.CheckedSequential(
        input_like=sk.chk.ArraySpec(named_shape={"a": n}),
        sublayers=[sk.nn.Identity()],
        output_like=sk.chk.ArraySpec(named_shape={"a": n}),
    )
    assert dict(layer(sk.nx.ones({"a": 3})).named_shape) == {"a": 3}
    with pytest.raises(sk.chk.StructureMismatchError, match="CheckedSequential input"):
        layer(sk.nx.ones({"b": 3}))
    shrinking = sk.nn.CheckedSequential(
        input_like=sk.chk.ArraySpec(named_shape={"a": n}),
        sublayers=[sk.nn.RenameAxes("a", "b")],
        output_like=sk.chk.ArraySpec(named_shape={"a": n}),
    )
    with pytest.raises(sk.chk.StructureMismatchError, match="CheckedSequential output"):
        shrinking(sk.nx.ones({"a": 3}))


def test_check_structure_layer():
    check = sk.nn.CheckStructure(sk.chk.ArraySpec(named_shape={"f": 4}))
    x = sk.nx.ones({"f": 4})
    assert check(x) is x
    with pytest.raises(sk.chk.StructureMismatchError, match="CheckStructure"):
        check(sk.nx.ones({"f": 5}))


def test_group_predicates():
    assert sk.nn.is_sequential_or_named(sk.nn.Sequential([]))
    assert sk.nn.is_sequential_or_named(sk.nn.NamedGroup("x", []))
    assert sk.nn.is_sequential_or_named(sk.nn.Affine(sublayers=[]))
    assert not sk.nn.is_sequential_or_named(sk.nn.Identity())
    assert sk.nn.is_anonymous_sequential(sk.nn.Sequential([]))
    assert not sk.nn.is_anonymous_sequential(sk.nn.Affine(sublayers=[]))


def test_inline_anonymous_sequentials_flattens_only_plain_sequentials():
    a, b, c = sk.nn.Identity(), sk.nn.Elementwise(abs), sk.nn.Elementwise(jnp.exp)
    named = sk.nn.NamedGroup("keep", [c])
    tree = sk.nn.Sequential([a, sk.nn.Sequential([b, sk.nn.Sequential([a])]), named])
    flat = sk.nn.inline_anonymous_sequentials(tree)
    assert flat.sublayers == [a, b, a, named]


def test_inline_groups_with_custom_filters():
    inner = sk.nn.NamedGroup("inner", [sk.nn.Identity(), sk.nn.Identity()])
    tree = sk.nn.NamedGroup("outer", [inner, sk.nn.Elementwise(abs)])
    flat = sk.nn.inline_groups(
        tree,
        parent_filter=lambda g: getattr(g, "name", None) == "outer",
        child_filter=lambda g: getattr(g, "name", None) == "inner",
    )
    assert len(flat.sublayers) == 3
    assert flat.name == "outer"


# ------------------------------------------------------------ combinators


def test_residual_and_branches_match_numpy():
    data, x = _random({"a": 3})
    square, double = sk.nn.Elementwise(jnp.square), sk.nn.Elementwise(lambda v: 2 * v)
    np.testing.assert_allclose(_np(sk.nn.Residual(square)(x), "a"), data**2 + data, rtol=1e-6)
    add = sk.nn.BranchAndAddTogether([square, double, sk.nn.Identity()])
    np.testing.assert_allclose(_np(add(x), "a"), data**2 + 3 * data, rtol=1e-5)
    mul = sk.nn.BranchAndMultiplyTogether([square, double])
    np.testing.assert_allclose(_np(mul(x), "a"), 2 * data**3, rtol=1e-5)


@pytest.mark.parametrize("cls", [sk.nn.BranchAndAddTogether, sk.nn.BranchAndMultiplyTogether])
def test_branches_must_not_be_empty(cls):
    with pytest.raises(ValueError, match="no branches"):
        cls([])(jnp.ones(2))


# ------------------------------------------------------------- parameters


def test_derive_param_key_depends_on_name_and_base_key():
    def data(key):
        return jax.random.key_data(key).tolist()

    base = jax.random.key(0)
    assert data(sk.nn.derive_param_key(base, "w")) == data(sk.nn.derive_param_key(base, "w"))
    assert data(sk.nn.derive_param_key(base, "w")) != data(sk.nn.derive_param_key(base, "v"))
    other = jax.random.key(1)
    assert data(sk.nn.derive_param_key(base, "w")) != data(sk.nn.derive_param_key(other, "w"))


def test_make_parameter_passes_arguments_and_metadata():
    def init(key, scale, *, n):
        return sk.nx.full({"a": n}, scale)

    param = sk.nn.make_parameter(
        "p", jax.random.key(0), init, 2.0, n=3, metadata={"trainable": False}
    )
    assert isinstance(param, sk.Parameter)
    assert param.label == "p" and param.metadata == {"trainable": False}
    np.testing.assert_array_equal(param.value.unwrap("a"), [2.0, 2.0, 2.0])


def test_make_parameter_without_key_never_calls_the_initializer():
    def init(key):
        raise AssertionError("must not be called")

    assert sk.nn.make_parameter("p", None, init) == sk.ParameterSlot("p")


def test_assert_no_parameter_slots_names_the_slots():
    model = sk.nn.Linear.from_config(
        name="lin", init_base_rng=None, input_axes={"a": 2}, output_axes={"b": 2}
    )
    with pytest.raises(ValueError, match=r"(?s)1 unbound parameter slot.*'lin\.weights'"):
        sk.nn.assert_no_parameter_slots(model)
    sk.nn.assert_no_parameter_slots(sk.nn.Identity())


def test_parameter_like_protocol():
    assert isinstance(sk.Parameter(label="w", value=1.0), sk.nn.ParameterLike)
    assert isinstance(sk.Parameter(label="w", value=1.0).freeze(), sk.nn.ParameterLike)
    assert not isinstance(3.0, sk.nn.ParameterLike)


# ------------------------------------------------------------------ Layer


def test_bind_variables_fills_slots():
    layer = _Scale(sk.ParameterSlot("f"))
    bound = layer.bind_variables([sk.Parameter(label="f", value=4.0)])
    assert float(bound(jnp.asarray(2.0))) == 8.0
    with pytest.raises(sk.UnboundVariableError):
        layer(jnp.asarray(2.0))


def test_stateless_call_round_trip_does_not_mutate_the_original():
    counter = sk.StateVariable(0, label="calls")
    model = sk.nn.Sequential([_CountCalls(counter), _CountCalls(counter)])
    unbound, values = sk.unbind_state_vars(model, freeze=True)
    result, new_values = unbound.stateless_call(values, jnp.zeros(()))
    assert float(result) == 2.0
    assert [v.label for v in new_values] == ["calls"]
    assert int(new_values[0].value) == 2
    assert counter.value == 0
    result, newer = unbound.stateless_call(new_values, jnp.zeros(()))
    assert int(newer[0].value) == 4


def test_stateless_call_under_jit():
    counter = sk.StateVariable(0, label="calls")
    unbound, values = sk.unbind_state_vars(_CountCalls(counter), freeze=True)
    run = jax.jit(lambda layer, values, x: layer.stateless_call(values, x))
    _, new_values = run(unbound, values, jnp.zeros(()))
    assert int(new_values[0].value) == 1


def test_stateless_call_rejects_escaped_variables():
    @sk.pytree_dataclass
    class Leak(sk.nn.Layer):
        var: sk.StateVariable

        def __call__(self, x, /, **side_inputs):
            return self.var

    unbound, values = sk.unbind_state_vars(Leak(sk.StateVariable(1, label="v")), freeze=True)
    with pytest.raises(ValueError, match="temporary variable"):
        unbound.stateless_call(values, None)


def test_shared_parameter_is_unbound_once_and_gets_one_summed_gradient():
    shared = sk.Parameter(label="w", value=jnp.asarray(3.0))
    model = sk.nn.Sequential([_Scale(shared), sk.nn.Elementwise(jnp.sin), _Scale(shared)])
    unbound, params = sk.unbind_params(model, freeze=True)
    assert len(params) == 1
    assert unbound.sublayers[0].factor == unbound.sublayers[2].factor == sk.ParameterSlot("w")

    x = 0.5

    def loss(params):
        return unbound.bind_variables(params)(jnp.asarray(x))

    (grad,) = jax.grad(loss)(params)
    w = 3.0
    # d/dw [w * sin(w * x)] = sin(w x) + w x cos(w x): both uses contribute.
    np.testing.assert_allclose(float(grad.value), np.sin(w * x) + w * x * np.cos(w * x), rtol=1e-5)


def test_base_layers_render_with_treescope():
    model = sk.nn.Sequential(
        [
            sk.nn.NamedGroup("g", [sk.nn.Softmax("a"), sk.nn.TanhSoftCap(2.0)]),
            sk.nn.Residual(sk.nn.Identity()),
            sk.nn.BranchAndAddTogether([sk.nn.CastToDType(jnp.float32)]),
            sk.nn.CheckStructure(sk.chk.ArraySpec(named_shape={"a": 2})),
        ]
    )
    text = treescope.render_to_text(model)
    for name in ("NamedGroup", "Softmax", "Residual", "BranchAndAddTogether", "CheckStructure"):
        assert name in text
