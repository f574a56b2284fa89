"""save_intermediates: savers record exactly what a manual forward pass computes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed import save_intermediates as si
from saikei.toolshed.jit_wrapper import Jitted


def _model():
    up = sk.nn.Linear.from_config(
        name="up", init_base_rng=jax.random.key(1), input_axes={"x": 3}, output_axes={"h": 4}
    )
    down = sk.nn.Linear.from_config(
        name="down", init_base_rng=jax.random.key(2), input_axes={"h": 4}, output_axes={"x": 3}
    )
    return (
        sk.nn.Sequential(
            [
                sk.nn.Residual(sk.nn.Sequential([up, sk.nn.Elementwise(jnp.tanh), down])),
                sk.nn.Elementwise(jax.nn.relu),
            ]
        ),
        up,
        down,
    )


def _savers(model):
    return sk.select(model).at_instances_of(si.SaveIntermediate).get_sequence()


def _manual(x, w_up, w_down):
    h = x @ w_up
    t = np.tanh(h)
    d = t @ w_down
    r = x + d
    # Order in which savers run: outer start, inner start, after up, after tanh,
    # after down (inner end), after residual, after relu.
    return [x, x, h, t, d, r, np.maximum(r, 0)]


def test_saved_values_equal_manual_forward_pass():
    model, up, down = _model()
    x = np.asarray(jax.random.normal(jax.random.key(3), (3,)), dtype=np.float32)
    saving = si.saving_all_intermediates(model)
    saving(sk.nx.wrap(jnp.asarray(x)).tag("x"))
    expected = _manual(
        x,
        np.asarray(up.weights.value.unwrap("x", "h")),
        np.asarray(down.weights.value.unwrap("h", "x")),
    )
    savers = _savers(saving)
    assert len(savers) == len(expected)
    for saver, want in zip(savers, expected):
        got = saver.saved.value
        got = (
            np.asarray(got.unwrap(*got.named_shape.keys())) if hasattr(got, "named_shape") else got
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_labels_are_deterministic_and_ordered():
    model, _, _ = _model()
    first = [
        s.saved.label for s in _savers(si.saving_all_intermediates(model, intermediates_group="g"))
    ]
    second = [
        s.saved.label for s in _savers(si.saving_all_intermediates(model, intermediates_group="g"))
    ]
    assert first == second
    assert first == [sk.ScopedStateVarLabel(group="g", index=i) for i in range(7)]


def test_input_model_is_not_modified():
    model, _, _ = _model()
    si.saving_all_intermediates(model)
    assert _savers(model) == ()


def test_shapes_only_records_array_specs():
    model, _, _ = _model()
    saving = si.saving_all_intermediates(model, shapes_only=True)
    saving(sk.nx.ones({"x": 3, "batch": 2}))
    savers = sk.select(saving).at_instances_of(si.SaveIntermediateShape).get_sequence()
    specs = [s.saved.value for s in savers]
    assert all(isinstance(spec, sk.chk.ArraySpec) for spec in specs)
    assert dict(specs[2].named_shape) == {"batch": 2, "h": 4}
    assert dict(specs[0].named_shape) == {"x": 3, "batch": 2}


def test_savers_work_under_jit():
    model, _, _ = _model()
    x = sk.nx.ones({"x": 3})
    eager = si.saving_all_intermediates(model)
    eager(x)
    jitted = si.saving_all_intermediates(model)
    Jitted(jitted)(x)
    for a, b in zip(_savers(eager), _savers(jitted)):
        np.testing.assert_allclose(
            np.asarray(a.saved.value.data_array), np.asarray(b.saved.value.data_array), rtol=1e-6
        )


def test_same_group_twice_is_an_error():
    model, _, _ = _model()
    once = si.saving_all_intermediates(model, intermediates_group="g")
    with pytest.raises(ValueError, match="clash"):
        si.saving_all_intermediates(once, intermediates_group="g")
    twice = si.saving_all_intermediates(once, intermediates_group="other")
    assert len(sk.select(twice).at_instances_of(si.SaveIntermediate).get_sequence()) > 7


# Where the savers go (penzai 0.2.5's documented placement) --------------------------


def _layout(model):
    """Saver indices and layer names, nested like the model (S<i> is a saver)."""

    def describe(node):
        if isinstance(node, si.SaveIntermediate):
            return f"S{node.saved.label.index}"
        if isinstance(node, sk.nn.Elementwise):
            return node.fn.__name__
        if hasattr(node, "sublayers"):
            return [describe(x) for x in node.sublayers]
        return type(node).__name__

    return describe(model)


_E = sk.nn.Elementwise


def test_group_inside_group_gets_savers_only_between():
    model = sk.nn.Sequential(
        [_E(jnp.exp), sk.nn.NamedGroup("g", [_E(jnp.sin), _E(jnp.cos)]), _E(jnp.log)]
    )
    assert _layout(si.saving_all_intermediates(model)) == [
        "S0", "exp", "S1", ["sin", "S2", "cos"], "S3", "log", "S4"
    ]  # fmt: skip


def test_layer_that_is_not_a_group_is_wrapped():
    saving = si.saving_all_intermediates(_E(jnp.exp))
    assert type(saving) is sk.nn.Sequential
    assert _layout(saving) == ["S0", "exp", "S1"]


def test_group_below_another_layer_gets_all_savers():
    model = sk.nn.Residual(sk.nn.Sequential([_E(jnp.sin), _E(jnp.cos)]))
    saving = si.saving_all_intermediates(model)
    assert _layout(saving)[0] == "S0" and _layout(saving)[2] == "S4"
    assert _layout(saving.sublayers[1].delta) == [
        "S1", "sin", "S2", "cos", "S3"
    ]  # fmt: skip


def test_checked_sequential_gets_savers():
    spec = sk.chk.ArraySpec(shape=(2,))
    model = sk.nn.CheckedSequential(
        input_like=spec, output_like=spec, sublayers=[_E(jnp.exp), _E(jnp.log)]
    )
    assert _layout(si.saving_all_intermediates(model)) == ["S0", "exp", "S1", "log", "S2"]


def test_no_group_gives_unique_automatic_labels():
    model, _, _ = _model()
    labels = [s.saved.label for s in _savers(si.saving_all_intermediates(model, None))]
    assert len(labels) == 7 and len(set(labels)) == 7
    assert all(isinstance(label, sk.AutoStateVarLabel) for label in labels)


# LayerStack ------------------------------------------------------------------------


@sk.pytree_dataclass
class _AddBias(sk.nn.Layer):
    bias: sk.nn.ParameterLike

    def __call__(self, x, /, **side_inputs):
        return x + self.bias.value


def _stack():
    bias = sk.Parameter(label="bias", value=sk.nx.wrap(jnp.arange(3.0), "layers"))
    block = sk.nn.Sequential([_AddBias(bias), _E(jnp.square)])
    return sk.nn.LayerStack(block, stack_axis="layers", stack_axis_size=3)


def _manual_stack(x):
    outs = []
    for i in range(3):
        x = (x + i) ** 2
        outs.append(x)
    return outs


def test_saving_all_intermediates_in_layerstack_keeps_every_layer():
    saving = si.saving_all_intermediates(_stack())
    saving(sk.nx.wrap(jnp.array([0.5, -1.0]), "f"))
    savers = _savers(saving)  # outside, block start, between, block end, outside
    assert len(savers) == 5
    block_end = savers[3].saved.value
    assert block_end.named_shape == {"layers": 3, "f": 2}
    want = _manual_stack(np.array([0.5, -1.0]))
    for i in range(3):
        np.testing.assert_allclose(block_end[{"layers": i}].unwrap("f"), want[i], rtol=1e-6)
    np.testing.assert_allclose(savers[4].saved.value.unwrap("f"), want[2], rtol=1e-6)


def test_layerstack_savers_again_and_under_variable_jit():
    saving = si.saving_all_intermediates(_stack())
    run = sk.variable_jit(lambda model, x: model(x))
    for start in (0.5, 2.0):
        run(saving, sk.nx.wrap(jnp.array([start, -1.0]), "f"))
    got = _savers(saving)[3].saved.value
    want = _manual_stack(np.array([2.0, -1.0]))
    for i in range(3):
        np.testing.assert_allclose(got[{"layers": i}].unwrap("f"), want[i], rtol=1e-6)


def test_inserted_default_saver_works_in_layerstack():
    model = sk.select(_stack()).at_instances_of(_AddBias).insert_after(si.SaveIntermediate())
    model(sk.nx.wrap(jnp.array([1.0]), "f"))
    (saver,) = _savers(model)
    # Layer i's saver sees its input plus bias i.
    inputs = [1.0] + [v[0] for v in _manual_stack(np.array([1.0]))[:2]]
    for i in range(3):
        np.testing.assert_allclose(
            saver.saved.value[{"layers": i}].unwrap("f"), [inputs[i] + i], rtol=1e-6
        )


def test_shape_savers_in_layerstack():
    saving = si.saving_all_intermediates(_stack(), shapes_only=True)
    saving(sk.nx.wrap(jnp.ones(2), "f"))
    specs = [
        s.saved.value
        for s in sk.select(saving).at_instances_of(si.SaveIntermediateShape).get_sequence()
    ]
    assert all(isinstance(spec, sk.chk.ArraySpec) for spec in specs)


# The same saver inserted at several places ----------------------------------------------


def test_insert_after_at_many_places_gives_each_place_its_own_variable():
    model = sk.nn.Sequential([_E(jnp.exp), _E(jnp.sin), _E(jnp.cos)])
    saving = sk.select(model).at_instances_of(sk.nn.Elementwise).insert_after(si.SaveIntermediate())
    saving(jnp.array([0.3]))
    savers = _savers(saving)
    assert len({id(s.saved) for s in savers}) == 3
    assert len({s.saved.label for s in savers}) == 3
    e = np.exp(0.3)
    want = [e, np.sin(e), np.cos(np.sin(e))]
    for saver, value in zip(savers, want):
        np.testing.assert_allclose(saver.saved.value, [value], rtol=1e-6)


def test_insert_at_one_place_keeps_the_users_saver():
    saver = si.SaveIntermediate()
    model = sk.select(sk.nn.Sequential([_E(jnp.exp)])).at_instances_of(_E).insert_after(saver)
    model(jnp.zeros(1))
    np.testing.assert_allclose(saver.saved.value, [1.0])


def test_labelled_saver_at_many_places_is_an_error():
    model = sk.nn.Sequential([_E(jnp.exp), _E(jnp.sin)])
    saver = si.SaveIntermediate(sk.StateVariable(None, label="mine"))
    with pytest.raises(ValueError, match="'mine' was inserted at several places"):
        sk.select(model).at_instances_of(_E).insert_after(saver)


# Savers inside generate --------------------------------------------------------------


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_generate_runs_with_savers_and_keeps_the_last_step(use_layer_stack):
    pytest.importorskip("transformers")
    from saikei.models.transformer import _families, model_parts, sampling
    from tests.models._hf_helpers import TINY_LLAMA, random_hf_model

    hf = random_hf_model("LlamaConfig", "LlamaForCausalLM", TINY_LLAMA)
    lm = _families.from_huggingface_model(hf, use_layer_stack=use_layer_stack)
    saving = (
        sk.select(lm)
        .at_instances_of(model_parts.TransformerBlock)
        .apply(lambda b: dataclasses.replace(b, sublayers=[*b.sublayers, si.SaveIntermediate()]))
    )
    prompt = np.array([[5, 9, 13, 2]], np.int32)
    new = sampling.generate(
        saving, sk.nx.wrap(jnp.asarray(prompt), "batch", "seq"), max_new_tokens=3, temperature=0.0
    )
    assert (
        new.unwrap("batch", "seq").tolist()
        == sampling.generate(
            lm, sk.nx.wrap(jnp.asarray(prompt), "batch", "seq"), max_new_tokens=3, temperature=0.0
        )
        .unwrap("batch", "seq")
        .tolist()
    )
    # The last call of the loop ran the last-but-one new token.
    full = np.concatenate([prompt, np.asarray(new.unwrap("batch", "seq"))[:, :-1]], axis=1)
    import torch

    with torch.no_grad():
        hidden = hf(torch.tensor(full), output_hidden_states=True).hidden_states
    block0_last = hidden[1][:, -1].numpy()  # output of block 0 at the last position
    savers = _savers(saving)
    if use_layer_stack:
        (saver,) = savers
        value = saver.saved.value
        axis = next(n for n in value.named_shape if n not in ("batch", "seq", "embedding"))
        got = value[{axis: 0}]
    else:
        got = savers[0].saved.value
    assert got.named_shape["seq"] == 1
    np.testing.assert_allclose(
        got.unwrap("batch", "seq", "embedding")[:, 0], block0_last, atol=1e-5
    )
