"""Text and HTML renderings of Structs, layers, variables and selections."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import pytest
import treescope
from treescope import lowering

from saikei import sk
from saikei import viz as ts
from saikei.models import simple_mlp
from saikei.viz._selection_rendering import render_selection_root, render_value_focused_root


def _pair_type():
    @sk.pytree_dataclass
    class Pair(sk.Struct):
        left: object
        right: object
        tag: str = dataclasses.field(default="t", metadata={"pytree_node": False})

    return Pair


def test_struct_collapsed():
    Pair = _pair_type()
    assert treescope.render_to_text(Pair(1, 2)) == "Pair(left=1, right=2, tag='t')"


def test_struct_expanded():
    Pair = _pair_type()
    with treescope.using_expansion_strategy(max_height=None, target_width=10):
        text = treescope.render_to_text(Pair(1, [2, 3]))
    assert text == "Pair(\n  left=1,\n  right=[2, 3],\n  tag='t',\n)"


def test_childless_layer():
    assert treescope.render_to_text(sk.nn.Identity()) == "Identity()"


def test_sequential_subclass_is_marked_when_expanded():
    mlp = simple_mlp.MLP.from_config(name="mlp", init_base_rng=None, feature_sizes=[2, 3])
    with treescope.using_expansion_strategy(max_height=4):
        text = treescope.render_to_text(mlp)
    expected = (
        "MLP(  # Sequential\n"
        "  sublayers=[\n"
        "    Affine(sublayers=[Linear(weights=ParameterSlot(label='mlp/Affine_0/Linear.weights'),"
        " in_axis_names=('features',), out_axis_names=('features_out',)),"
        " RenameAxes(old=('features_out',), new=('features',)),"
        " AddBias(bias=ParameterSlot(label='mlp/Affine_0/AddBias.bias'), new_axis_names=())]),\n"
        "  ],\n"
        ")"
    )
    assert text == expected


def test_plain_sequential_is_not_marked():
    with treescope.using_expansion_strategy(max_height=None, target_width=5):
        text = treescope.render_to_text(sk.nn.Sequential([sk.nn.Identity()]))
    assert text == "Sequential(\n  sublayers=[\n    Identity(),\n  ],\n)"


def test_sequential_comment_absent_when_collapsed():
    layer = sk.nn.LayerNorm.from_config(name="ln", init_base_rng=None, across_axes={"e": 2})
    with treescope.using_expansion_strategy(max_height=1):
        text = treescope.render_to_text(layer)
    assert text.startswith("LayerNorm(sublayers=[")
    assert "#" not in text


def test_named_group_shows_its_name():
    group = sk.nn.NamedGroup("attn", [sk.nn.Identity(), sk.nn.Softmax(("kv",))])
    text = treescope.render_to_text(group)
    assert (
        text == "NamedGroup(\n  name='attn',\n  sublayers=[Identity(), Softmax(axes=('kv',))],\n)"
    )


def test_always_collapse_metadata_keeps_field_on_one_line():
    long_list = list(range(30))
    with treescope.using_expansion_strategy(max_height=None, target_width=10):
        text = treescope.render_to_text(sk.nn.CheckStructure(expected=long_list))
    assert text == f"CheckStructure(\n  expected={long_list!r},\n)"


def test_layer_colour_is_stable_and_per_type():
    assert sk.nn.Identity().treescope_color() == sk.nn.Identity().treescope_color()
    assert sk.nn.Identity().treescope_color() != sk.nn.Softmax(("a",)).treescope_color()
    html = treescope.render_to_html(sk.nn.Softmax(("a",)), compressed=False)
    assert sk.nn.Softmax(("a",)).treescope_color() in html


def test_plain_struct_has_no_colour():
    Pair = _pair_type()
    assert Pair(1, 2).treescope_color() is None


def test_static_fields_are_styled_in_html():
    html = treescope.render_to_html(sk.nn.RenameAxes(old=("a",), new=("b",)), compressed=False)
    assert "font-style: italic" in html


def test_children_are_not_styled_as_static():
    Pair = _pair_type()

    @sk.pytree_dataclass
    class OnlyChildren(sk.Struct):
        left: object

    html = treescope.render_to_html(OnlyChildren(1), compressed=False)
    assert "font-style: italic" not in html
    assert "font-style: italic" in treescope.render_to_html(Pair(1, 2), compressed=False)


def test_parameter_renders_label_and_value():
    text = treescope.render_to_text(sk.Parameter(label="w", value=jnp.zeros(2)))
    assert text == (
        "Parameter(\n  label='w',\n  value=<jax.Array([0., 0.], dtype=float32)>,\n  metadata={},\n)"
    )


def test_state_variable_and_its_forms():
    state = sk.StateVariable(0, label="n")
    assert treescope.render_to_text(state.get_slot()) == "StateVariableSlot(label='n')"
    assert treescope.render_to_text(state.freeze()).startswith("StateVariableValue(\n  label='n',")


def test_shared_parameter_is_marked_as_repeated():
    shared = sk.Parameter(label="w", value=jnp.ones(2))
    model = sk.nn.Sequential(
        [
            sk.nn.AddBias(bias=shared, new_axis_names=()),
            sk.nn.AddBias(bias=shared, new_axis_names=()),
        ]
    )
    text = treescope.render_to_text(model)
    assert "# Repeated python obj" in text
    single = sk.nn.AddBias(bias=sk.Parameter(label="v", value=jnp.ones(2)), new_axis_names=())
    assert "Repeated" not in treescope.render_to_text(sk.nn.Sequential([single]))


def test_slots_have_a_striped_fill_in_html():
    html = treescope.render_to_html(sk.ParameterSlot("w"), compressed=False)
    assert "#b2d9f5" in html
    param_html = treescope.render_to_html(
        sk.Parameter(label="w", value=jnp.ones(2)), compressed=False
    )
    assert "repeating-linear-gradient" not in param_html
    assert "repeating-linear-gradient" in treescope.render_to_html(
        sk.nn.AddBias(bias=sk.ParameterSlot("w"), new_axis_names=()), compressed=False
    )


def test_selection_root_outlines_selected_nodes():
    sel = sk.select({"a": 1, "b": [2, 3]}).at(lambda t: t["b"][1])
    text = lowering.render_to_text_as_root(render_selection_root(sel)).replace("┄", "")
    assert text == "{\n  'a': 1,\n  'b': [\n    2,\n    #╭╮\n    3\n    #╰╯\n    ,\n  ],\n}"


def test_selection_root_html_has_outline():
    sel = sk.select(sk.nn.Sequential([sk.nn.Identity()])).at_instances_of(sk.nn.Identity)
    html = lowering.render_to_html_as_root(render_selection_root(sel), compressed=False)
    assert "outline: 2px solid #e87800" in html


def test_show_value_expands_down_to_selection_only():
    tree = {"a": [1, 2], "b": [3, 4]}
    sel = sk.select(tree).at(lambda t: t["b"][0])
    text = lowering.render_to_text_as_root(render_value_focused_root(sel))
    assert text == "{\n  'a': [1, 2],\n  'b': [\n    3,\n    4,\n  ],\n}"


def test_show_methods_print_outside_ipython(capsys):
    sel = sk.select([1, 2]).at(lambda t: t[1])
    sel.show_selection()
    sel.show_value()
    out = capsys.readouterr().out
    assert "#╭" in out
    assert "[\n  1,\n  2,\n]" in out


def test_treescope_render_of_selection_root_html():
    mlp = simple_mlp.MLP.from_config(name="mlp", init_base_rng=None, feature_sizes=[2, 3, 2])
    sel = sk.select(mlp).at_instances_of(sk.nn.Linear)
    html = lowering.render_to_html_as_root(render_value_focused_root(sel))
    assert "<" in html and len(html) > 100


def test_ts_display_and_show_print_text(capsys):
    ts.display(sk.nn.Identity())
    ts.show("x =", sk.nn.Identity())
    assert capsys.readouterr().out == "Identity()\nx = Identity()\n"


def test_ts_basic_interactive_setup_passes_abbreviation_threshold():
    previous = treescope.abbreviation_threshold.get()
    previous_viz = treescope.active_autovisualizer.get()
    try:
        ts.basic_interactive_setup(autovisualize_arrays=True, abbreviation_threshold=1)
        assert treescope.abbreviation_threshold.get() == 1
        assert isinstance(treescope.active_autovisualizer.get(), ts.ArrayAutovisualizer)
    finally:
        treescope.abbreviation_threshold.set_globally(previous)
        treescope.active_autovisualizer.set_globally(previous_viz)


def test_ts_basic_interactive_setup_rejects_bad_threshold():
    with pytest.raises(ValueError, match="abbreviation_threshold"):
        ts.basic_interactive_setup(autovisualize_arrays=False, abbreviation_threshold=-1)


def test_ts_facade_names():
    for name in [
        "basic_interactive_setup",
        "display",
        "register_as_default",
        "render_to_html",
        "render_to_text",
        "render_array",
        "render_array_sharding",
        "ArrayAutovisualizer",
        "integer_digitbox",
        "text_on_color",
        "using_expansion_strategy",
        "show",
    ]:
        assert callable(getattr(ts, name)), name


def test_html_rendering_of_mlp():
    import jax

    mlp = simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[2, 3, 2]
    )
    html = ts.render_to_html(mlp, compressed=False)
    assert "Affine" in html and "Linear" in html
