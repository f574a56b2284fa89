"""NamedArray summaries, the NamedArray NDArray adapter, sharding figures, ArraySpec text."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from hypothesis import given, settings
from hypothesis import strategies as st
from treescope import layout_algorithms, lowering, ndarray_adapters, rendering_parts

from saikei import sk
from saikei.viz import _arrays_api as api


def _expanded_text(value, roundtrip=False):
    rendering = treescope.active_renderer.get().to_foldable_representation(value)
    layout_algorithms.expand_to_depth(rendering.renderable, 10)
    root = rendering_parts.build_full_line_with_annotations(rendering)
    return lowering.render_to_text_as_root(root, roundtrip)


# ---------------------------------------------------------------- summaries


def test_named_array_collapsed_summary_shows_shapes_and_integer_stats():
    x = sk.nx.NamedArray(jnp.arange(24).reshape(2, 3, 4), axis_names=("seq", "heads"))
    assert treescope.render_to_text(x) == (
        "<NamedArray int32(2 | seq:3, heads:4) [≥0, ≤23] zero:1 nonzero:23 (wrapping jax.Array)>"
    )


def test_named_array_float_stats_match_numpy():
    values = np.array([[1.0, -2.0, 0.0], [4.0, 0.5, 3.0]], dtype=np.float32)
    text = treescope.render_to_text(sk.nx.wrap(jnp.asarray(values), "a", "b"))
    assert f"≈{values.mean():.2} ±{values.std():.2}" in text
    assert f"[≥{values.min():.2}, ≤{values.max():.2}]" in text
    assert "zero:1 nonzero:5" in text


def test_named_array_bool_stats():
    x = sk.nx.wrap(jnp.array([True, False, True]), "a")
    assert treescope.render_to_text(x) == (
        "<NamedArray bool(| a:3) true:2 false:1 (wrapping jax.Array)>"
    )


def test_named_array_view_with_interleaved_positional_axis():
    x = sk.nx.NamedArray(jnp.zeros((4, 2, 3)), axis_names=("heads", None, "seq"))
    assert treescope.render_to_text(x).startswith("<NamedArray float32(2 | heads:4, seq:3)")


def test_named_array_expanded_shows_fields():
    x = sk.nx.wrap(jnp.arange(3), "a")
    text = _expanded_text(x)
    assert text.startswith("NamedArray(  # int32(| a:3) [≥0, ≤2]")
    assert "  data_array=" in text
    assert "  axis_names=(" in text
    assert text.rstrip().endswith(")")


def test_named_array_roundtrip_mode_is_a_constructor_call():
    x = sk.nx.wrap(jnp.arange(3), "a")
    text = treescope.render_to_text(x, roundtrip_mode=True)
    assert text.startswith("saikei.core.named_axes.NamedArray(data_array=")
    assert text.endswith("axis_names=('a',))")


def test_named_array_of_tracer_and_shape_struct_have_no_stats():
    x = sk.nx.wrap(jnp.ones((2, 3)), "a", "b")
    seen = []
    jax.jit(lambda y: seen.append(treescope.render_to_text(y)) or y)(x)
    assert seen == ["<NamedArray float32(| a:2, b:3) (wrapping tracer)>"]
    abstract = jax.eval_shape(lambda: x)
    assert treescope.render_to_text(abstract) == (
        "<NamedArray float32(| a:2, b:3) (wrapping jax.ShapeDtypeStruct)>"
    )


def test_named_array_renders_to_html():
    x = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "seq", "heads")
    html = treescope.render_to_html({"x": x}, compressed=False)
    assert "seq:2, heads:3" in html


# ------------------------------------------------------------------ adapter


def test_adapter_axis_info_is_by_name_and_position():
    x = sk.nx.NamedArray(jnp.zeros((4, 2, 3, 5)), axis_names=("heads", None, "seq"))
    adapter = treescope.type_registries.lookup_ndarray_adapter(x)
    assert adapter.get_axis_info_for_array_data(x) == (
        ndarray_adapters.PositionalAxisInfo(0, 4),
        ndarray_adapters.NamedPositionlessAxisInfo("heads", 2),
        ndarray_adapters.PositionalAxisInfo(1, 3),
        ndarray_adapters.NamedPositionlessAxisInfo("seq", 5),
    )


def _keys(infos):
    return [i.logical_key() for i in infos]


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    data=st.data(),
)
def test_adapter_data_equals_numpy_transposed_by_hand(shape, data):
    ndim = len(shape)
    named = data.draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
    names = tuple(f"ax{d}" if n else None for d, n in enumerate(named))
    values = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    x = sk.nx.NamedArray(jnp.asarray(values), axis_names=names)
    edges = tuple(
        data.draw(st.one_of(st.none(), st.integers(1, 3))) if s > 6 else None for s in shape
    )
    adapter = x.__treescope_ndarray_adapter__()
    infos = adapter.get_axis_info_for_array_data(x)
    got, valid = adapter.get_array_data_with_truncation(x, None, edges)
    # Oracle: numpy slicing of the same data, axis by axis.
    expected = values
    expected_valid = np.ones(values.shape, bool)
    for axis, edge in enumerate(edges):
        if edge is None:
            continue
        take = [*range(edge), 0, *range(shape[axis] - edge, shape[axis])]
        expected = np.take(expected, take, axis=axis)
        expected_valid = np.take(expected_valid, take, axis=axis)
        index = [slice(None)] * ndim
        index[axis] = edge
        expected_valid[tuple(index)] = False
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_array_equal(np.where(valid, got, 0), np.where(expected_valid, expected, 0))
    positional = [d for d, n in enumerate(named) if not n]
    assert _keys(infos) == [positional.index(d) if not n else f"ax{d}" for d, n in enumerate(named)]


def test_render_array_by_axis_name_matches_positional_rendering_inputs():
    values = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    x = sk.nx.NamedArray(jnp.asarray(values.transpose(2, 0, 1)), axis_names=("heads", None, "seq"))
    figure = api.render_array(x, rows=["seq"], columns=["heads"], sliders=[0])
    html = lowering.render_to_html_as_root(figure.treescope_part, compressed=False)
    assert "seq" in html and "heads" in html
    adapter = x.__treescope_ndarray_adapter__()
    got, _ = adapter.get_array_data_with_truncation(x, None, (None, None, None))
    order = [_keys(adapter.get_axis_info_for_array_data(x)).index(k) for k in (0, "seq", "heads")]
    np.testing.assert_array_equal(got.transpose(order), values)


def test_render_array_rejects_unknown_axis_name():
    x = sk.nx.wrap(jnp.zeros((2, 3)), "seq", "heads")
    with pytest.raises(KeyError):
        api.render_array(x, rows=["batch"])


def test_valid_mask_named_array_broadcasts_by_name():
    x = sk.nx.NamedArray(jnp.zeros((2, 5, 3)), axis_names=("seq", "heads"))
    mask = sk.nx.wrap(jnp.array([True, False, True]), "heads")
    adapter = x.__treescope_ndarray_adapter__()
    _, valid = adapter.get_array_data_with_truncation(x, mask, (None, None, None))
    expected = np.broadcast_to(np.array([True, False, True])[None, None, :], (2, 5, 3))
    np.testing.assert_array_equal(valid, expected)
    api.render_array(x, rows=["seq"], columns=["heads"], valid_mask=mask)


def test_valid_mask_in_other_layout_is_matched_by_name():
    x = sk.nx.wrap(jnp.zeros((4, 3)), "seq", "heads")
    mask_values = np.random.default_rng(1).random((3, 4)) > 0.5
    mask = sk.nx.wrap(jnp.asarray(mask_values), "heads", "seq")
    adapter = x.__treescope_ndarray_adapter__()
    _, valid = adapter.get_array_data_with_truncation(x, mask, (1, None))
    expected = mask_values.T[[0, 0, 3]]
    expected[1] = False
    np.testing.assert_array_equal(valid, expected)


def test_valid_mask_with_unknown_name_is_an_error():
    x = sk.nx.wrap(jnp.zeros((4, 3)), "seq", "heads")
    with pytest.raises(ValueError, match="batch"):
        api.render_array(x, valid_mask=sk.nx.wrap(jnp.ones(2, bool), "batch"))


def test_valid_mask_with_wrong_size_is_an_error():
    x = sk.nx.wrap(jnp.zeros((4, 3)), "seq", "heads")
    with pytest.raises(ValueError, match="'heads' has size 2"):
        api.render_array(x, valid_mask=sk.nx.wrap(jnp.ones(2, bool), "heads"))


def test_render_array_of_tracer_is_an_error():
    def f(y):
        api.render_array(y)
        return y

    with pytest.raises(TypeError, match="tracer"):
        jax.jit(f)(sk.nx.wrap(jnp.zeros(3), "a"))


def test_autovisualizer_draws_named_arrays():
    x = sk.nx.wrap(jnp.arange(12.0).reshape(3, 4), "seq", "heads")
    with treescope.active_autovisualizer.set_scoped(api.ArrayAutovisualizer()):
        text = treescope.render_to_text({"x": x})
    assert "<Arrayviz rendering>" in text
    assert "NamedArray float32(| seq:3, heads:4)" in text


def test_sharding_info_on_single_device():
    x = sk.nx.wrap(jnp.zeros((4, 3)), "seq", "heads")
    info = x.__treescope_ndarray_adapter__().get_sharding_info_for_array_data(x)
    assert info.shard_shape == (4, 3) and info.device_type == "CPU"


_SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from treescope import lowering
    from saikei import sk
    from saikei.viz import _arrays_api as api

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    data = jax.device_put(
        jnp.arange(8 * 12.0).reshape(8, 12), NamedSharding(mesh, PartitionSpec("data", "model"))
    )
    x = sk.nx.NamedArray(data, axis_names=("seq", "heads"))
    info = x.__treescope_ndarray_adapter__().get_sharding_info_for_array_data(x)
    assert info.shard_shape == (4, 3), info.shard_shape
    assert len(info.device_index_to_shard_slices) == 8
    figure = api.render_array_sharding(x, rows=["seq"], columns=["heads"])
    html = lowering.render_to_html_as_root(figure.treescope_part, compressed=False)
    assert "seq" in html and "heads" in html
    print("OK", len(html))
    """
)


def test_render_array_sharding_on_an_eight_device_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", _SHARDING_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK")


# ---------------------------------------------------------------- ArraySpec


def test_arrayspec_compact_text():
    chk = sk.chk
    n = chk.var("n")
    spec = chk.ArraySpec(shape=(3,), named_shape={"seq": n, "heads": 8}, dtype=jnp.float32)
    assert treescope.render_to_text(spec) == "<ArraySpec float32(3 | seq:{n}, heads:8)>"


def test_arrayspec_with_multi_dim_vars_and_abstract_dtype():
    chk = sk.chk
    spec = chk.ArraySpec(
        shape=(*chk.var("rest"), 2), named_shape={**chk.var("others")}, dtype=np.floating
    )
    assert treescope.render_to_text(spec) == "<ArraySpec floating(*{rest…}, 2 | **{others:…})>"


def test_dim_vars_and_wildcards_render_compactly():
    chk = sk.chk
    text = treescope.render_to_text([chk.var("n"), chk.ANY, chk.KnownDim("m", 4)])
    assert text == "[<DimVar {n}>, <Wildcard>, <KnownDim {m=4}>]"


def test_arrayspec_roundtrip_text_evaluates_to_equal_spec():
    import saikei

    chk = sk.chk
    spec = chk.ArraySpec(
        shape=(3, chk.var("n"), *chk.var("rest")),
        named_shape={"seq": chk.var("n"), **chk.var("others")},
        dtype=np.floating,
    )
    text = treescope.render_to_text(spec, roundtrip_mode=True)
    assert eval(text, {"saikei": saikei, "numpy": np, "np": np}) == spec


def test_arrayspec_expanded_shows_constructor_fields():
    spec = sk.chk.ArraySpec(shape=(3,), named_shape={"seq": 8})
    text = _expanded_text(spec)
    assert text.startswith("ArraySpec(")
    assert "shape=(" in text and "named_shape={" in text


# ---------------------------------------------------------- autovisualizer


def test_for_tokenizer_accepts_sentencepiece_like_processor():
    class Processor:
        def GetPieceSize(self):
            return 2

        def IdToPiece(self, i):
            return ["▁a", "▁b"][i]

        def IsControl(self, i):
            return False

    viz = api.ArrayAutovisualizer.for_tokenizer(Processor())
    assert isinstance(viz, treescope.ArrayAutovisualizer)
    assert viz.token_lookup_fn(1) == "'▁b'"
    assert viz.token_lookup_fn(5) == "<out of range: 5>"


def test_for_tokenizer_rejects_unknown_objects():
    with pytest.raises(TypeError, match="Unsupported tokenizer"):
        api.ArrayAutovisualizer.for_tokenizer(42)
