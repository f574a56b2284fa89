"""Roundtrip mode: the text rendering of an unbound model is source that rebuilds it."""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope

import saikei
from saikei import sk
from saikei.models import simple_mlp

ENV = {"saikei": saikei, "sk": sk, "jax": jax, "jnp": jnp, "np": np}


def roundtrip(tree):
    source = treescope.render_to_text(tree, roundtrip_mode=True)
    return source, eval(source, dict(ENV))


def assert_same_tree(original, rebuilt, source):
    assert jax.tree_util.tree_structure(original) == jax.tree_util.tree_structure(rebuilt), source
    assert type(original) is type(rebuilt), source
    for a, b in zip(jax.tree_util.tree_leaves(original), jax.tree_util.tree_leaves(rebuilt)):
        if isinstance(a, (jax.Array, np.ndarray)):
            assert np.asarray(a).dtype == np.asarray(b).dtype, source
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=source)
        else:
            assert a == b, source


def _linear():
    return sk.nn.Linear.from_config(
        name="lin", init_base_rng=None, input_axes={"features": 3}, output_axes={"out": 2}
    )


def _attention():
    return sk.nn.Attention(
        input_to_query=_linear(),
        input_to_key=_linear(),
        input_to_value=_linear(),
        query_key_to_attn=sk.nn.Sequential(
            [
                sk.nn.NamedEinsum((("seq", "p"), ("kv_seq", "p")), ("seq", "kv_seq")),
                sk.nn.ApplyCausalAttentionMask(masked_out_value=-1e9),
                sk.nn.Softmax("kv_seq"),
            ]
        ),
        attn_value_to_output=sk.nn.NamedEinsum((("seq", "kv_seq"), ("kv_seq", "p")), ("seq", "p")),
    )


def _table():
    return sk.nn.EmbeddingTable.from_config(
        name="emb", init_base_rng=None, vocab_size=5, embedding_axes={"embedding": 4}
    )


LAYERS = {
    "AddBias": lambda: sk.nn.AddBias.from_config(
        name="b", init_base_rng=None, biased_axes={"features": 3}
    ),
    "Affine": lambda: sk.nn.Affine.from_config(
        name="aff", init_base_rng=None, input_axes={"features": 3}, output_axes={"features": 2}
    ),
    "ApplyCausalAttentionMask": lambda: sk.nn.ApplyCausalAttentionMask(masked_out_value=-1e9),
    "ApplyCausalSlidingWindowAttentionMask": lambda: sk.nn.ApplyCausalSlidingWindowAttentionMask(
        masked_out_value=-1e9, sliding_window_size=4
    ),
    "ApplyExplicitAttentionMask": lambda: sk.nn.ApplyExplicitAttentionMask(
        mask_input_name="mask", masked_out_value=-1e9
    ),
    "ApplyRoPE": lambda: sk.nn.ApplyRoPE(embedding_axis="projection", max_wavelength=10_000),
    "ApplyRoPEToSubset": lambda: sk.nn.ApplyRoPEToSubset(
        embedding_axis="projection", max_wavelength=10_000, rope_subset_size=4
    ),
    "Attention": _attention,
    "BranchAndAddTogether": lambda: sk.nn.BranchAndAddTogether([sk.nn.Identity(), _linear()]),
    "BranchAndMultiplyTogether": lambda: sk.nn.BranchAndMultiplyTogether(
        [sk.nn.Identity(), sk.nn.Elementwise(jax.nn.sigmoid)]
    ),
    "CastToDType": lambda: sk.nn.CastToDType(jnp.bfloat16),
    "CheckStructure": lambda: sk.nn.CheckStructure(expected={"a": 1}),
    "CheckedSequential": lambda: sk.nn.CheckedSequential(
        input_like=None, sublayers=[sk.nn.Identity()], output_like=None
    ),
    "ConstantRescale": lambda: sk.nn.ConstantRescale(by=0.5),
    "DisabledDropout": lambda: sk.nn.DisabledDropout(
        drop_rate=0.1, share_across_axes=("seq",), random_stream_input_name="rng"
    ),
    "Elementwise": lambda: sk.nn.Elementwise(jax.nn.relu),
    "EmbeddingDecode": lambda: sk.nn.EmbeddingDecode(_table()),
    "EmbeddingLookup": lambda: sk.nn.EmbeddingLookup(_table()),
    "EmbeddingTable": _table,
    "Identity": lambda: sk.nn.Identity(),
    "KVCachingAttention": lambda: sk.nn.KVCachingAttention.from_uncached(
        _attention(),
        sequence_axis="seq",
        cache_len=4,
        cached_axes={"p": 2},
        cache_end_index_key="cache_end",
        cache_label="cache",
        layerstack_axes={"layers": 2},
    ),
    "LayerNorm": lambda: sk.nn.LayerNorm.from_config(
        name="ln", init_base_rng=None, across_axes={"embedding": 4}
    ),
    "LayerStack": lambda: sk.nn.LayerStack.from_sublayer_builder(
        lambda init_base_rng: sk.nn.Linear.from_config(
            name="blk",
            init_base_rng=init_base_rng,
            input_axes={"features": 3},
            output_axes={"out": 3},
        ),
        "layers",
        2,
        None,
        {},
        unroll=2,
    ),
    "Linear": _linear,
    "LinearInPlace": lambda: sk.nn.Linear.from_config(
        name="lip", init_base_rng=None, input_axes={"features": 3}, output_axes={"features": 3}
    ),
    "NamedEinsum": lambda: sk.nn.NamedEinsum((("a", "b"), ("b", "c")), ("a", "c")),
    "NamedGroup": lambda: sk.nn.NamedGroup("block", [sk.nn.Identity()]),
    "RMSLayerNorm": lambda: sk.nn.RMSLayerNorm.from_config(
        name="rms", init_base_rng=None, across_axes={"embedding": 4}
    ),
    "RMSStandardize": lambda: sk.nn.RMSStandardize(across=("embedding",), epsilon=1e-6),
    "RenameAxes": lambda: sk.nn.RenameAxes(old=("a",), new=("b",)),
    "Residual": lambda: sk.nn.Residual(sk.nn.Identity()),
    "Sequential": lambda: sk.nn.Sequential([sk.nn.Identity(), sk.nn.Elementwise(jnp.tanh)]),
    "Softmax": lambda: sk.nn.Softmax(("kv_seq",)),
    "Standardize": lambda: sk.nn.Standardize(across=("embedding",), epsilon=1e-6),
    "StochasticDropout": lambda: sk.nn.StochasticDropout(
        drop_rate=0.1, share_across_axes=(), random_stream_input_name="rng"
    ),
    "TanhSoftCap": lambda: sk.nn.TanhSoftCap(soft_cap=30.0),
}


def _concrete_layer_types():
    names = []
    for name in dir(sk.nn):
        value = getattr(sk.nn, name)
        if (
            isinstance(value, type)
            and issubclass(value, sk.Struct)
            and sk.is_pytree_dataclass_type(value)
        ):
            names.append(name)
    return names


def test_every_public_nn_struct_type_is_covered():
    assert sorted(_concrete_layer_types()) == sorted(LAYERS)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_roundtrips(name):
    layer = LAYERS[name]()
    assert type(layer).__name__ == name
    unbound = sk.unbind_variables(layer)[0]
    source, rebuilt = roundtrip(unbound)
    assert_same_tree(unbound, rebuilt, source)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_type_names_are_public_paths(name):
    unbound = sk.unbind_variables(LAYERS[name]())[0]
    source = treescope.render_to_text(unbound, roundtrip_mode=True)
    assert source.startswith(f"saikei.nn.{name}")
    assert "saikei.nn._" not in source and "saikei.core._" not in source


def test_simple_mlp_roundtrips():
    mlp = simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[2, 3, 2]
    )
    unbound = sk.unbind_params(mlp)[0]
    source, rebuilt = roundtrip(unbound)
    assert rebuilt == unbound
    assert source.startswith("saikei.models.simple_mlp.MLP(")


def test_slots_and_labels_roundtrip():
    tree = {
        "p": sk.ParameterSlot(label="a/b"),
        "s": sk.StateVariableSlot(label=("cache", 3)),
    }
    source, rebuilt = roundtrip(tree)
    assert rebuilt == tree, source


class _Mode(enum.Enum):
    FAST = 1


def test_static_enum_dtype_function_tuple_dict_roundtrip():
    @sk.pytree_dataclass
    class Holder(sk.Struct):
        behaviour: object = dataclasses.field(metadata={"pytree_node": False})
        dtype: object = dataclasses.field(metadata={"pytree_node": False})
        fn: object = dataclasses.field(metadata={"pytree_node": False})
        shape: tuple = dataclasses.field(metadata={"pytree_node": False})
        options: object = dataclasses.field(metadata={"pytree_node": False})

    holder = Holder(
        behaviour=sk.nn.LayerStackVarBehavior.PER_LAYER,
        dtype=jnp.float32,
        fn=jax.nn.gelu,
        shape=(1, (2, "x")),
        options={"a": 1.5, "b": None},
    )
    source = treescope.render_to_text(holder, roundtrip_mode=True)
    # Holder is local to this test, so give eval the name it renders with.
    env = dict(ENV, Holder=Holder)
    body = source[source.index("Holder(") :]
    rebuilt = eval(body, env)
    assert rebuilt == holder, source
    assert "saikei.nn.LayerStackVarBehavior.PER_LAYER" in source


def test_custom_init_struct_roundtrips_through_from_attributes():
    @sk.pytree_dataclass
    class Scaled(sk.Struct):
        value: float
        factor: float = dataclasses.field(metadata={"pytree_node": False})

        def __init__(self, value):
            self.value = value
            self.factor = 2.0

    original = Scaled(1.0)
    source = treescope.render_to_text(original, roundtrip_mode=True)
    assert ".Scaled.from_attributes(value=1.0, factor=2.0)" in source
    rebuilt = eval(source[source.index("Scaled.") :], dict(ENV, Scaled=Scaled))
    assert rebuilt == original


def test_bound_parameter_is_marked_not_roundtrippable():
    source = treescope.render_to_text(sk.Parameter(label="w", value=1.0), roundtrip_mode=True)
    assert source.startswith("<saikei.core.Parameter(")
    assert source.endswith(")>")


# --- array fields render as executable source (issue 14) --------------------


@sk.pytree_dataclass
class _Holder(sk.Struct):
    value: object
    other: object = None


def roundtrip_holder(tree):
    source = treescope.render_to_text(tree, roundtrip_mode=True)
    local = source.replace(f"{_Holder.__module__}._Holder", "_Holder")
    return source, eval(local, dict(ENV, _Holder=_Holder))


@pytest.mark.parametrize(
    "array",
    [
        jnp.array(0.5),  # weakly typed scalar
        jnp.array(3),
        jnp.array([1.5, -2.0], dtype=jnp.float32),
        jnp.arange(6, dtype=jnp.int8).reshape(2, 3),
        jnp.array([True, False]),
        jnp.array([1.0, 2.0], dtype=jnp.bfloat16),
        jnp.zeros((0, 2)),
        np.array([1.0, np.nan, -np.inf], dtype=np.float32),
        np.arange(4, dtype=np.int64),
    ],
    ids=["weak", "int", "f32", "int8-2d", "bool", "bf16", "empty", "np-nonfinite", "np-int64"],
)
def test_array_fields_roundtrip(array):
    holder = _Holder(value=array, other=jnp.array([1, 2]))
    source, rebuilt = roundtrip_holder(holder)
    assert "<" not in source, source
    assert_same_tree(holder, rebuilt, source)
    assert type(rebuilt.value) is type(holder.value), source
    assert getattr(rebuilt.value, "weak_type", False) == getattr(array, "weak_type", False)
    np.testing.assert_array_equal(np.asarray(rebuilt.value), np.asarray(array))


def test_layer_with_a_jax_scalar_field_roundtrips_and_compares_equal():
    layer = sk.nn.ConstantRescale(by=jnp.array(0.5))
    source, rebuilt = roundtrip(layer)
    assert rebuilt == layer, source
    x = sk.nx.wrap(jnp.array([1.0, 2.0], dtype=jnp.bfloat16), "a")
    assert rebuilt(x).dtype == layer(x).dtype == jnp.bfloat16  # weak type kept


def test_named_array_roundtrips():
    x = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "a", "b").untag("b")
    source, rebuilt = roundtrip(x)
    assert rebuilt.axis_names == x.axis_names, source
    np.testing.assert_array_equal(rebuilt.data_array, x.data_array)


def test_arrays_render_as_usual_outside_roundtrip_mode():
    text = treescope.render_to_text(_Holder(value=jnp.array([1.0, 2.0])))
    assert "jnp.asarray" not in text and "jax.Array" in text


def test_large_arrays_are_not_spelled_out():
    source = treescope.render_to_text(_Holder(value=jnp.zeros(5000)), roundtrip_mode=True)
    assert "jnp.asarray" not in source
