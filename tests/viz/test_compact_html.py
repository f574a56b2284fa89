"""saikei's lean treescope renderings show exactly what treescope's own parts show.

saikei renders its nodes with fewer, fused parts (templated constructor-call
nodes, one-part field lines, relative copy paths, a direct data-array
rendering). These tests pin the output to what treescope's generic parts
produce for the same tree: the same text, the same HTML and the same layout
decisions.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from treescope import layout_algorithms, lowering, rendering_parts
from treescope.external import jax_support

from saikei import sk
from saikei.models.transformer.variants import llamalike
from saikei.viz import _node_building, _node_html
from saikei.viz._copy_paths import CopyPathButton
from saikei.viz._data_array_rendering import array_preview_options, array_repr, render_data_array
from saikei.viz._named_array_handlers import value_statistics


@functools.cache
def _transformer(use_layer_stack: bool = False):
    config = llamalike.LlamalikeTransformerConfig(
        num_kv_heads=1,
        query_head_multiplier=2,
        embedding_dim=8,
        projection_dim=4,
        mlp_hidden_dim=12,
        num_decoder_blocks=2,
        vocab_size=16,
        use_layer_stack=use_layer_stack,
    )
    return llamalike.build_llamalike_transformer(config, jax.random.key(0))


@sk.pytree_dataclass
class _Holder(sk.Struct):
    items: object
    names: object
    empty: object = None


def _odd_values():
    shared_list = [1, 2]
    return _Holder(
        items=[shared_list, shared_list, ("x", (1, 2.5, None, True)), {}, {"k": 1}, []],
        names=("a" * 30, "multi\nline", (), ("one",)),
        empty={},
    )


def _shared_parameter_model():
    shared = sk.Parameter(label="w", value=jnp.ones(2))
    return sk.nn.Sequential(
        [
            sk.nn.AddBias(bias=shared, new_axis_names=()),
            sk.nn.AddBias(bias=shared, new_axis_names=()),
            sk.nn.ConstantRescale(by=jnp.array(0.5)),
        ]
    )


_CASES = {
    "transformer": lambda: _transformer(),
    "layer stack": lambda: _transformer(use_layer_stack=True),
    "slots": lambda: sk.unbind_params(_transformer())[0],
    "odd values": _odd_values,
    "shared parameter": _shared_parameter_model,
}
_LAYOUTS = [
    {"max_height": None},
    {"max_height": 1},
    {"max_height": 8},
    {"max_height": 30, "target_width": 10},
]


@pytest.fixture
def treescope_nodes(monkeypatch):
    """Builds every constructor-call node with treescope's builder instead of a template."""

    @dataclasses.dataclass
    class Unusable:
        usable: bool = False

    monkeypatch.setattr(_node_building, "node_template", lambda *args, **kwargs: Unusable())


def _render_all(text: bool) -> dict[tuple[str, int, bool], str]:
    out = {}
    for name, make in _CASES.items():
        value = make()
        for i, layout in enumerate(_LAYOUTS):
            with treescope.using_expansion_strategy(**layout):
                for roundtrip in (False, True):
                    if text:
                        rendering = treescope.render_to_text(value, roundtrip_mode=roundtrip)
                    else:
                        rendering = treescope.render_to_html(
                            value, roundtrip_mode=roundtrip, compressed=False
                        )
                    # Object ids (shared-value labels) and random element ids differ.
                    out[name, i, roundtrip] = re.sub(r"0x[0-9a-f]+|[0-9a-f]{32}", "ID", rendering)
    return out


@pytest.fixture(scope="module")
def templated_html() -> dict[tuple[str, int, bool], str]:
    return _render_all(text=False)


@pytest.fixture(scope="module")
def templated_text() -> dict[tuple[str, int, bool], str]:
    return _render_all(text=True)


def _button_where_treescope_puts_it(html: str) -> str:
    # Given no path, treescope's builder has no button of its own; saikei then
    # passes its button at the start of the first-line annotation (hidden in
    # collapsed nodes just the same). Templates put it where treescope would.
    html = re.sub(
        r'</label><span class="when_expanded">(<span class="copybutton sk_path"[^>]*>'
        r"<span></span></span>)",
        r'</label>\1<span class="when_expanded">',
        html,
    )
    return html.replace('<span class="when_expanded"></span>', "")


def test_templated_nodes_give_treescopes_html(templated_html, treescope_nodes):
    reference = _render_all(text=False)
    assert reference.keys() == templated_html.keys()
    for key, expected in reference.items():
        assert templated_html[key] == _button_where_treescope_puts_it(expected), key


def test_templated_nodes_lay_out_and_print_like_treescopes(templated_text, treescope_nodes):
    reference = _render_all(text=True)
    for key, expected in reference.items():
        assert templated_text[key] == expected, key


def test_a_template_that_cannot_be_split_falls_back_to_treescopes_node(monkeypatch):
    monkeypatch.setattr(_node_html, "_TEMPLATES", {})
    monkeypatch.setattr(_node_html.NodeTemplate, "_split", lambda self, *args: None)
    rendering = treescope.render_to_text(sk.nn.Softmax(("a", "b")))
    assert rendering == "Softmax(axes=('a', 'b'))"
    node = _node_building.constructor_node(
        "f(",
        [_node_building.field_lines(None, [("a", 1, False, False)], None)[0]],
        ")",
        None,
        template_key="doc-fallback",
    )
    assert not isinstance(node.renderable, _node_html.TemplatedNode)


def _arrays() -> list[jax.Array]:
    key = jax.random.key(0)
    rng = np.random.RandomState(0)
    arrays = [
        jnp.arange(3),
        jnp.zeros((64, 4, 16)),
        jax.random.normal(key, (64, 256)),
        jnp.array(2.0),
        jnp.ones((1000,)),
        jnp.ones((999,)),
        jnp.array([jnp.nan, 1.0, jnp.inf, -jnp.inf]),
        jnp.zeros((0, 3)),
        jnp.arange(5000).reshape(50, 100) % 7 == 0,
        jax.random.normal(key, (7, 7, 7)),
        jnp.ones((3000,), dtype=jnp.bfloat16),
        jnp.asarray(3.0) * jnp.ones((2000,)),
        jax.random.randint(key, (40, 40), -5, 5),
        jnp.full((1200,), 1e-9),
        jnp.full((1200,), 1e12),
        jnp.array([0.0, 1e-45, -2.5]),
    ]
    arrays += [
        jnp.asarray(rng.randn(rng.randint(1, 3000)) * 10.0 ** rng.randint(-8, 8), jnp.float32)
        for _ in range(40)
    ]
    return arrays


def _lowered(rendering, expand: bool) -> tuple[str, str]:
    if expand:
        layout_algorithms.expand_to_depth(rendering.renderable, 10)
    line = rendering_parts.build_full_line_with_annotations(rendering)
    html = lowering.render_to_html_as_root(line, compressed=False)
    return lowering.render_to_text_as_root(line), re.sub(r"[0-9a-f]{32}", "ID", html)


# The default preview options, numpy's own, and a third set.
_PRINT_OPTIONS = [
    array_preview_options.get(),
    {},
    {"precision": 8, "edgeitems": 3, "suppress": True},
]


@pytest.mark.parametrize("options", _PRINT_OPTIONS, ids=["default", "numpy", "other"])
@pytest.mark.parametrize("expand", [False, True])
def test_data_arrays_render_like_treescopes_jax_arrays_under_the_same_print_options(
    expand, options
):
    for array in _arrays():
        with array_preview_options.set_scoped(options):
            ours = render_data_array(array, None, None, lambda array=array: value_statistics(array))
        # Lowered outside the scope: a deferred rendering keeps the options it was made with.
        ours = _lowered(ours, expand)
        with np.printoptions(**options):
            theirs = _lowered(jax_support.render_jax_arrays(array, None, None), expand)
        assert ours == theirs, (array.shape, array.dtype, options)


def test_statistics_and_repr_are_treescopes():
    for array in _arrays():
        if array.size:
            assert value_statistics(array) == jax_support.summarize_array_data(array), array
        assert array_repr(array) == jax_support.faster_array_repr(array), array


def test_previews_default_to_four_decimals_and_two_edge_items():
    x = sk.nx.wrap(jnp.arange(1000.0).reshape(10, 100) / 3, "a", "b")
    html = treescope.render_to_html(x, compressed=False)
    assert "[[  0.    ,   0.3333, ...,  32.6667,  33.    ]," in html
    assert "0.33333334," not in html
    with array_preview_options.set_scoped({}):
        html = treescope.render_to_html(x, compressed=False)
    assert "0.33333334," in html


@pytest.mark.parametrize("bad", [{"decimals": 4}, [("precision", 4)], None])
def test_bad_preview_options_name_the_setting(bad):
    x = sk.nx.wrap(jnp.arange(3.0), "a")
    with (
        array_preview_options.set_scoped(bad),
        pytest.raises(TypeError, match=r"array_preview_options holds .* dict of numpy print"),
    ):
        treescope.render_to_html(x)


def test_an_autovisualizer_still_sees_data_arrays():
    seen = []

    def autovisualizer(value, path):
        seen.append(type(value))

    x = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "a", "b")
    with treescope.active_autovisualizer.set_scoped(autovisualizer):
        treescope.render_to_html(
            sk.nn.AddBias(bias=sk.Parameter(label="b", value=x), new_axis_names=())
        )
    assert type(x.data_array) in seen and str in seen


def _copy_paths(rendering) -> tuple[list[str], list[str]]:
    """The paths of saikei's and of treescope's copy buttons in a rendering."""
    ours, theirs, seen = [], [], set()

    def walk(part):
        if isinstance(part, (list, tuple)):
            for item in part:
                walk(item)
            return
        # A node's button object sits both on its first line and at the end of
        # its line in the parent; count each place.
        if isinstance(part, CopyPathButton):
            ours.append(part.path)
            return
        if type(part) is type(rendering_parts.build_copy_button("x")):
            theirs.append(part.copy_string)
            return
        if id(part) in seen or not isinstance(
            part, (rendering_parts.RenderableTreePart, rendering_parts.RenderableAndLineAnnotations)
        ):
            return
        seen.add(id(part))
        if dataclasses.is_dataclass(part):
            values = [getattr(part, field.name) for field in dataclasses.fields(part)]
        else:
            values = [v for k, v in vars(part).items() if not k.startswith("_")]
        walk(values)

    walk(rendering)
    return ours, theirs


def test_copy_paths_name_real_nodes_and_are_written_relative():
    model = _transformer()
    rendering = treescope.active_renderer.get().to_foldable_representation(model)
    ours, theirs = _copy_paths(rendering)
    paths = ours + theirs
    assert len(ours) > 5 * len(theirs)  # treescope still renders functions, with its buttons
    for path in paths:
        eval(f"model{path}", {"model": model})  # every path leads somewhere in the model
    html = treescope.render_to_html(model, compressed=False)
    # Treescope's buttons hold their whole path (twice); saikei's only hold
    # the part below the enclosing saikei node, e.g. `.weights` or `[0]`.
    assert html.count('class="copybutton sk_path"') == len(ours)
    pieces = re.findall(r' data-[kp]="([^"]*)"', html)
    assert pieces and max(len(piece) for piece in pieces) < 30
