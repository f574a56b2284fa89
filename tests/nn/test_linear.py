"""Tests for Linear, AddBias, Affine, LinearInPlace, RenameAxes, ConstantRescale, contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

KEY = jax.random.key(0)


def _random(names_sizes, seed=1, dtype=jnp.float32):
    shape = tuple(names_sizes.values())
    data = jax.random.normal(jax.random.key(seed), shape, dtype)
    return sk.nx.wrap(data, *names_sizes)


def _np(array, *names):
    return np.asarray(array.unwrap(*names), dtype=np.float64)


def _linear(**kwargs):
    return sk.nn.Linear.from_config(name="lin", init_base_rng=KEY, **kwargs)


# ----------------------------------------------------------------- Linear


def test_linear_matches_einsum():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 5})
    x = _random({"batch": 4, "a": 3})
    out = layer(x)
    w = _np(layer.weights.value, "a", "b")
    np.testing.assert_allclose(
        _np(out, "batch", "b"), np.einsum("na,ab->nb", _np(x, "batch", "a"), w), rtol=1e-5
    )
    assert dict(out.named_shape) == {"batch": 4, "b": 5}


def test_linear_with_several_input_and_output_axes():
    layer = _linear(input_axes={"a": 2, "b": 3}, output_axes={"c": 4, "d": 5})
    x = _random({"b": 3, "n": 2, "a": 2})
    w = _np(layer.weights.value, "a", "b", "c", "d")
    expected = np.einsum("bna,abcd->ncd", _np(x, "b", "n", "a"), w)
    np.testing.assert_allclose(_np(layer(x), "n", "c", "d"), expected, rtol=1e-5)


def test_linear_parallel_axes_apply_one_operator_per_position():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2}, parallel_axes={"heads": 4})
    x = _random({"batch": 5, "heads": 4, "a": 3})
    w = _np(layer.weights.value, "heads", "a", "b")
    expected = np.einsum("nha,hab->nhb", _np(x, "batch", "heads", "a"), w)
    np.testing.assert_allclose(_np(layer(x), "batch", "heads", "b"), expected, rtol=1e-5)


def test_linear_parallel_broadcast_axes_become_outputs():
    layer = _linear(input_axes={"a": 3}, output_axes={"c": 2}, parallel_broadcast_axes={"q": 4})
    x = _random({"batch": 5, "a": 3})
    w = _np(layer.weights.value, "q", "a", "c")
    assert layer.out_axis_names == ("c", "q")
    expected = np.einsum("na,qac->nqc", _np(x, "batch", "a"), w)
    np.testing.assert_allclose(_np(layer(x), "batch", "q", "c"), expected, rtol=1e-5)


def test_linear_result_does_not_depend_on_input_layout():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2}, parallel_axes={"p": 2})
    x = _random({"n": 4, "p": 2, "a": 3})
    out_1 = layer(x)
    out_2 = layer(x.order_as("a", "n", "p"))
    np.testing.assert_allclose(_np(out_1, "n", "p", "b"), _np(out_2, "n", "p", "b"), rtol=1e-6)


def test_linear_without_contraction_is_a_per_position_scale():
    weights = sk.Parameter(label="s", value=sk.nx.wrap(jnp.array([1.0, 2.0, 3.0]), "e"))
    layer = sk.nn.Linear(weights=weights, in_axis_names=(), out_axis_names=())
    x = _random({"n": 2, "e": 3})
    np.testing.assert_allclose(_np(layer(x), "n", "e"), _np(x, "n", "e") * [1.0, 2.0, 3.0])


def test_linear_promotes_dtypes_like_jnp():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2})
    x = _random({"a": 3}, dtype=jnp.bfloat16)
    assert layer(x).dtype == jnp.result_type(jnp.bfloat16, jnp.float32)


def test_linear_axis_properties():
    layer = _linear(
        input_axes={"a": 3},
        output_axes={"b": 2},
        parallel_axes={"p": 4},
        parallel_broadcast_axes={"q": 5},
    )
    assert layer.input_axes == {"a": 3}
    assert layer.output_axes == {"b": 2, "q": 5}
    assert layer.parallel_axes == {"p": 4}


def test_linear_from_config_labels_and_slots():
    layer = sk.nn.Linear.from_config(
        name="proj", init_base_rng=None, input_axes={"a": 2}, output_axes={"b": 3}
    )
    assert layer.weights == sk.ParameterSlot("proj.weights")
    bound = layer.bind_variables(
        [sk.Parameter(label="proj.weights", value=sk.nx.ones({"a": 2, "b": 3}))]
    )
    np.testing.assert_allclose(_np(bound(sk.nx.ones({"a": 2})), "b"), [2.0, 2.0, 2.0])


def test_linear_from_config_uses_the_initializer_and_dtype():
    layer = _linear(
        input_axes={"a": 2},
        output_axes={"b": 3},
        initializer=sk.nn.constant_initializer(0.5),
        dtype=jnp.bfloat16,
    )
    assert layer.weights.value.dtype == jnp.bfloat16
    np.testing.assert_array_equal(_np(layer.weights.value, "a", "b"), np.full((2, 3), 0.5))


def test_overlapping_names_give_linear_in_place():
    layer = _linear(input_axes={"features": 4}, output_axes={"features": 6})
    assert type(layer) is sk.nn.LinearInPlace
    linear, rename = layer.sublayers
    assert linear.out_axis_names == ("features_out",)
    assert (rename.old, rename.new) == (("features_out",), ("features",))
    x = _random({"batch": 2, "features": 4})
    w = _np(linear.weights.value, "features", "features_out")
    np.testing.assert_allclose(
        _np(layer(x), "batch", "features"), _np(x, "batch", "features") @ w, rtol=1e-5
    )


def test_renamed_output_name_avoids_existing_names():
    layer = _linear(input_axes={"x": 2}, output_axes={"x_out": 3, "x": 4})
    linear, rename = layer.sublayers
    assert dict(linear.weights.value.named_shape) == {"x": 2, "x_out": 3, "x_out_1": 4}
    assert dict(layer(sk.nx.ones({"x": 2})).named_shape) == {"x_out": 3, "x": 4}
    assert rename.old == ("x_out_1",)


def test_overlap_without_renaming_is_an_error():
    with pytest.raises(ValueError, match="rename_outputs_if_necessary"):
        _linear(input_axes={"x": 2}, output_axes={"x": 3}, rename_outputs_if_necessary=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"parallel_axes": {"x": 2}},
        {"parallel_axes": {"y": 3}},
        {"parallel_broadcast_axes": {"x": 2}},
        {"parallel_axes": {"p": 2}, "parallel_broadcast_axes": {"p": 2}},
    ],
)
def test_parallel_axes_must_not_overlap(kwargs):
    with pytest.raises(ValueError, match="Parallel axes must be distinct"):
        _linear(input_axes={"x": 2}, output_axes={"y": 3}, **kwargs)


def test_wrong_input_size_names_label_and_axes():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2})
    with pytest.raises(
        ValueError, match=r"'lin\.weights'.*'a' has size 4 but the weights expect 3"
    ):
        layer(sk.nx.ones({"a": 4}))


def test_missing_input_axis_is_an_error():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2}, parallel_axes={"p": 2})
    with pytest.raises(ValueError, match=r"'p' \(size 2\) is missing"):
        layer(sk.nx.ones({"a": 3}))


def test_output_axis_in_input_is_an_error():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2})
    with pytest.raises(ValueError, match="output axis 'b' is already in the input"):
        layer(sk.nx.ones({"a": 3, "b": 2}))


def test_positional_and_plain_inputs_are_rejected():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2})
    with pytest.raises(ValueError, match="positional axes"):
        layer(sk.nx.wrap(jnp.ones((2, 3))).tag_prefix("n"))
    with pytest.raises(TypeError, match="expected a NamedArray"):
        layer(jnp.ones(3))


def test_linear_under_jit_and_grad():
    layer = _linear(input_axes={"a": 3}, output_axes={"b": 2})
    model, params = sk.unbind_params(layer, freeze=True)
    x = _random({"n": 4, "a": 3})

    def loss(params):
        return model.bind_variables(params)(x).data_array.sum()

    grads = jax.jit(jax.grad(loss))(params)
    # d/dW sum(x @ W) = sum over n of x[n, a], for every output column.
    expected = np.repeat(_np(x, "n", "a").sum(0)[:, None], 2, axis=1)
    np.testing.assert_allclose(_np(grads[0].value, "a", "b"), expected, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 8, 64, 65, 128])
def test_weight_stored_out_in_matches_numpy_for_any_row_count(rows):
    # One row, a few rows (batched decoding) and many rows take three different
    # forms of the product with a weight stored (out, in); values and
    # gradients must agree with numpy for each.
    rng = np.random.default_rng(rows)
    w = rng.normal(size=(24, 40)).astype(np.float32)  # (b, a): out, in
    x = rng.normal(size=(rows, 40)).astype(np.float32)
    cotangent = rng.normal(size=(rows, 24)).astype(np.float32)
    layer = sk.nn.Linear(
        weights=sk.Parameter(label="w", value=sk.nx.wrap(w, "b", "a")),
        in_axis_names=("a",),
        out_axis_names=("b",),
    )

    def loss(x):
        out = layer(sk.nx.wrap(x, "n", "a"))
        return (out.unwrap("n", "b") * cotangent).sum(), out

    (_, out), grad_x = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(x))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert out.axis_names == ("n", "b")
    np.testing.assert_allclose(_np(out, "n", "b"), x64 @ w64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_x), cotangent @ w64, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    n_in=st.integers(1, 4),
    n_out=st.integers(1, 4),
    n_par=st.integers(0, 3),
    batch=st.integers(1, 3),
    permute=st.permutations(["n", "a", "p"]),
    seed=st.integers(0, 2**16),
)
def test_linear_matches_numpy_for_random_shapes(n_in, n_out, n_par, batch, permute, seed):
    rng = np.random.default_rng(seed)
    has_par = n_par > 0
    w = rng.normal(size=(n_par, n_in, n_out) if has_par else (n_in, n_out)).astype(np.float32)
    w_names = ("p", "a", "b") if has_par else ("a", "b")
    layer = sk.nn.Linear(
        weights=sk.Parameter(label="w", value=sk.nx.wrap(w, *w_names)),
        in_axis_names=("a",),
        out_axis_names=("b",),
    )
    sizes = {"n": batch, "a": n_in, "p": n_par}
    names = [name for name in permute if name != "p" or has_par]
    x = rng.normal(size=tuple(sizes[name] for name in names)).astype(np.float32)
    out = layer(sk.nx.wrap(x, *names))
    if has_par:
        expected = np.einsum("npa,pab->npb", np.einsum(f"{''.join(names)}->npa", x), w)
        actual = _np(out, "n", "p", "b")
    else:
        expected = np.einsum(f"{''.join(names)}->na", x) @ w
        actual = _np(out, "n", "b")
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    w_order=st.permutations(["a1", "a2", "b1", "b2", "p"]),
    x_order=st.permutations(["n1", "n2", "a1", "a2", "p"]),
    use_par=st.booleans(),
    two_in=st.booleans(),
    two_out=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_any_weight_and_input_layout_matches_numpy(
    w_order, x_order, use_par, two_in, two_out, seed
):
    # Weights stored in any axis order, with several in/out/parallel axes, go
    # through the merged-matrix path when their groups are adjacent and the
    # general contraction otherwise; both must give numpy's answer.
    sizes = {"n1": 2, "n2": 3, "a1": 4, "a2": 2, "b1": 3, "b2": 2, "p": 2}
    dropped = {"p"} - {"p" if use_par else ""} | ({"a2"} - {"a2" if two_in else ""})
    dropped |= {"b2"} - {"b2" if two_out else ""}
    w_names = [n for n in w_order if n not in dropped]
    x_names = [n for n in x_order if n not in dropped]
    rng = np.random.default_rng(seed)
    w = rng.normal(size=[sizes[n] for n in w_names]).astype(np.float32)
    x = rng.normal(size=[sizes[n] for n in x_names]).astype(np.float32)
    layer = sk.nn.Linear(
        weights=sk.Parameter(label="w", value=sk.nx.wrap(w, *w_names)),
        in_axis_names=tuple(n for n in ("a1", "a2") if n not in dropped),
        out_axis_names=tuple(n for n in ("b1", "b2") if n not in dropped),
    )
    out = jax.jit(layer)(sk.nx.wrap(x, *x_names))
    letters = {n: chr(ord("c") + i) for i, n in enumerate(sizes)}
    out_names = [n for n in ("n1", "n2", "p", "b1", "b2") if n not in dropped]
    spec = (
        f"{''.join(letters[n] for n in x_names)},{''.join(letters[n] for n in w_names)}"
        f"->{''.join(letters[n] for n in out_names)}"
    )
    expected = np.einsum(spec, x.astype(np.float64), w.astype(np.float64))
    assert out.named_shape == {n: sizes[n] for n in out_names}
    np.testing.assert_allclose(_np(out, *out_names), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- AddBias


def test_add_bias_adds_by_name():
    bias = sk.Parameter(label="b", value=sk.nx.wrap(jnp.array([1.0, 2.0]), "f"))
    layer = sk.nn.AddBias(bias=bias, new_axis_names=())
    x = _random({"f": 2, "n": 3})
    np.testing.assert_allclose(_np(layer(x), "n", "f"), _np(x, "n", "f") + np.array([1.0, 2.0]))


def test_add_bias_with_new_axes():
    layer = sk.nn.AddBias.from_config(
        name="x",
        init_base_rng=KEY,
        biased_axes={"a": 2},
        new_output_axes={"n": 3},
        initializer=sk.nn.constant_initializer(1.0),
    )
    assert layer.new_axis_names == ("n",)
    out = layer(sk.nx.zeros({"z": 5, "a": 2}))
    assert dict(out.named_shape) == {"z": 5, "a": 2, "n": 3}
    np.testing.assert_array_equal(_np(out, "z", "a", "n"), np.ones((5, 2, 3)))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 3}, "'a' has size 3 but the bias has 2"),
        ({"z": 3}, r"'a' \(size 2\) is missing"),
        ({"a": 2, "n": 3}, "new axis 'n' is already in the input"),
    ],
)
def test_add_bias_shape_errors_name_the_label(value, message):
    layer = sk.nn.AddBias.from_config(
        name="x", init_base_rng=KEY, biased_axes={"a": 2}, new_output_axes={"n": 3}
    )
    with pytest.raises(ValueError, match=r"bias 'x\.bias'.*" + message):
        layer(sk.nx.ones(value))


def test_add_bias_from_config_default_is_zero_and_slots():
    layer = sk.nn.AddBias.from_config(name="b", init_base_rng=KEY, biased_axes={"f": 3})
    np.testing.assert_array_equal(_np(layer.bias.value, "f"), np.zeros(3))
    assert sk.nn.AddBias.from_config(name="b", init_base_rng=None, biased_axes={"f": 3}).bias == (
        sk.ParameterSlot("b.bias")
    )


def test_add_bias_rejects_overlapping_axis_groups():
    with pytest.raises(ValueError, match="both biased_axes"):
        sk.nn.AddBias.from_config(
            name="b", init_base_rng=KEY, biased_axes={"f": 3}, new_output_axes={"f": 3}
        )


# ----------------------------------------------------------------- Affine


def test_affine_structure_and_labels():
    layer = sk.nn.Affine.from_config(
        name="mlp/Affine_0", init_base_rng=KEY, input_axes={"a": 2}, output_axes={"b": 3}
    )
    assert [type(s).__name__ for s in layer.sublayers] == ["Linear", "AddBias"]
    labels = [p.label for p in sk.unbind_params(layer)[1]]
    assert labels == ["mlp/Affine_0/Linear.weights", "mlp/Affine_0/AddBias.bias"]


def test_affine_computes_x_w_plus_b():
    layer = sk.nn.Affine.from_config(
        name="aff",
        init_base_rng=KEY,
        input_axes={"features": 3},
        output_axes={"features": 4},
        bias_initializer=sk.nn.constant_initializer(0.25),
    )
    assert [type(s).__name__ for s in layer.sublayers] == ["Linear", "RenameAxes", "AddBias"]
    x = _random({"batch": 2, "features": 3})
    w = _np(layer.sublayers[0].weights.value, "features", "features_out")
    expected = _np(x, "batch", "features") @ w + 0.25
    np.testing.assert_allclose(_np(layer(x), "batch", "features"), expected, rtol=1e-5)


def test_affine_bias_covers_parallel_axes():
    layer = sk.nn.Affine.from_config(
        name="a",
        init_base_rng=KEY,
        input_axes={"x": 2},
        output_axes={"y": 3},
        parallel_axes={"p": 4},
        parallel_broadcast_axes={"q": 5},
    )
    assert dict(layer.sublayers[-1].bias.value.named_shape) == {"y": 3, "p": 4, "q": 5}
    assert dict(layer(sk.nx.ones({"x": 2, "p": 4})).named_shape) == {"p": 4, "q": 5, "y": 3}


# ---------------------------------------------------- RenameAxes and friends


def test_rename_axes_single_and_tuple():
    x = sk.nx.ones({"a": 2, "b": 3, "c": 4})
    assert dict(sk.nn.RenameAxes("a", "z")(x).named_shape) == {"z": 2, "b": 3, "c": 4}
    renamed = sk.nn.RenameAxes(("a", "b"), ("y", "z"))(x)
    assert dict(renamed.named_shape) == {"y": 2, "z": 3, "c": 4}


def test_rename_axes_can_swap_names_without_moving_data():
    x = _random({"a": 2, "b": 3})
    swapped = sk.nn.RenameAxes(("a", "b"), ("b", "a"))(x)
    np.testing.assert_array_equal(_np(swapped, "b", "a"), _np(x, "a", "b"))


def test_rename_axes_keeps_positional_axes():
    x = sk.nx.wrap(jnp.zeros((5, 2))).tag_prefix("a")
    out = sk.nn.RenameAxes("a", "z")(x)
    assert out.positional_shape == (2,)
    assert dict(out.named_shape) == {"z": 5}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("q", "w", "no axis"),
        ("a", "b", "repeat an axis name"),
        (("a", "b"), ("w",), "2 old names but 1 new"),
    ],
)
def test_rename_axes_errors(old, new, message):
    with pytest.raises(ValueError, match=message):
        sk.nn.RenameAxes(old, new)(sk.nx.ones({"a": 2, "b": 3}))


def test_constant_rescale_on_named_and_plain_arrays():
    np.testing.assert_allclose(sk.nn.ConstantRescale(by=3.0)(jnp.array([1.0, 2.0])), [3.0, 6.0])
    out = sk.nn.ConstantRescale(by=0.5)(_random({"a": 3}))
    np.testing.assert_allclose(_np(out, "a"), _np(_random({"a": 3}), "a") * 0.5)


def test_constant_rescale_factor_is_a_pytree_child():
    layer = sk.nn.ConstantRescale(by=2.0)
    double = jax.jit(lambda layer, x: layer(x))
    np.testing.assert_allclose(double(layer, jnp.ones(2)), [2.0, 2.0])
    np.testing.assert_allclose(double(sk.nn.ConstantRescale(by=5.0), jnp.ones(2)), [5.0, 5.0])


# --------------------------------------------------------------- contract


def test_contract_matches_tensordot():
    a, b = _random({"x": 3, "y": 4}, seed=1), _random({"z": 5, "y": 4}, seed=2)
    out = sk.nn.contract("y", a, b)
    assert dict(out.named_shape) == {"x": 3, "z": 5}
    np.testing.assert_allclose(_np(out, "x", "z"), _np(a, "x", "y") @ _np(b, "z", "y").T, rtol=1e-5)


def test_contract_vectorizes_over_shared_names():
    a, b = _random({"b": 2, "x": 3, "y": 4}, seed=1), _random({"y": 4, "z": 5, "b": 2}, seed=2)
    out = sk.nn.contract(["y"], a, b)
    expected = np.einsum("bxy,yzb->bxz", _np(a, "b", "x", "y"), _np(b, "y", "z", "b"))
    np.testing.assert_allclose(_np(out, "b", "x", "z"), expected, rtol=1e-5)
    both = sk.nn.contract(("y", "b"), a, b)
    np.testing.assert_allclose(_np(both, "x", "z"), expected.sum(0), rtol=1e-5)


def test_contract_errors():
    a = sk.nx.ones({"x": 3, "y": 4})
    with pytest.raises(ValueError, match="'q' is missing from the left"):
        sk.nn.contract("q", a, sk.nx.ones({"q": 1}))
    with pytest.raises(ValueError, match="'y' has size 4 on the left and 3 on the right"):
        sk.nn.contract("y", a, sk.nx.ones({"y": 3}))
    with pytest.raises(ValueError, match="positional"):
        sk.nn.contract("y", a.untag("x"), sk.nx.ones({"y": 4}))


# -------------------------------------------------------------- rendering


def test_layers_render_with_treescope():
    layer = sk.nn.Affine.from_config(
        name="aff", init_base_rng=KEY, input_axes={"f": 2}, output_axes={"f": 3}
    )
    text = treescope.render_to_text(layer)
    assert "aff/Linear.weights" in text
    assert "RenameAxes" in text
    assert "ConstantRescale" in treescope.render_to_text(sk.nn.ConstantRescale(by=2.0))
