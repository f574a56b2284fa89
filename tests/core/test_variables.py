"""Tests for variables: labels, values, slots, unbind/bind/freeze and variable_jit."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk

# Labels ------------------------------------------------------------------------------


def test_explicit_labels_are_kept():
    assert sk.Parameter(label="w", value=1.0).label == "w"
    assert sk.StateVariable(0, label=("cache", 3)).label == ("cache", 3)


def test_automatic_label_uses_object_id():
    var = sk.StateVariable(0)
    assert var.label == sk.AutoStateVarLabel(var_id=id(var))


def test_scoped_labels_repeat_across_scopes():
    def build():
        with sk.scoped_auto_state_var_labels():
            return [sk.StateVariable(0).label, sk.StateVariable(0).label]

    assert build() == build() == [sk.ScopedStateVarLabel(None, 0), sk.ScopedStateVarLabel(None, 1)]


def test_nested_scopes_count_independently():
    with sk.scoped_auto_state_var_labels("outer"):
        first = sk.StateVariable(0).label
        with sk.scoped_auto_state_var_labels("inner"):
            inner = sk.StateVariable(0).label
        after = sk.StateVariable(0).label
    assert (first, inner, after) == (
        sk.ScopedStateVarLabel("outer", 0),
        sk.ScopedStateVarLabel("inner", 0),
        sk.ScopedStateVarLabel("outer", 1),
    )


def test_scope_ends_with_context():
    with sk.scoped_auto_state_var_labels():
        pass
    assert isinstance(sk.StateVariable(0).label, sk.AutoStateVarLabel)


def test_labels_sort_after_strings():
    labels = [sk.ScopedStateVarLabel("g", 1), "b", sk.AutoStateVarLabel(5), "a"]
    ordered = sorted(labels)
    assert ordered[:2] == ["a", "b"]
    assert set(ordered[2:]) == {sk.ScopedStateVarLabel("g", 1), sk.AutoStateVarLabel(5)}


def test_scoped_labels_with_none_and_string_groups_are_ordered():
    labels = [sk.ScopedStateVarLabel("g", 0), sk.ScopedStateVarLabel(None, 3)]
    assert len(sorted(labels)) == 2


def test_dict_keyed_by_mixed_labels_flattens():
    tree = {"x": 1, sk.ScopedStateVarLabel(None, 0): 2, sk.AutoStateVarLabel(7): 3}
    assert sorted(jax.tree_util.tree_leaves(tree)) == [1, 2, 3]


# Values ------------------------------------------------------------------------------


def test_numpy_value_becomes_jax_array():
    var = sk.Parameter(label="w", value=np.arange(3, dtype=np.float32))
    assert isinstance(var.value, jax.Array)
    np.testing.assert_array_equal(var.value, [0.0, 1.0, 2.0])


def test_python_number_becomes_weakly_typed_array():
    var = sk.StateVariable(1.5, label="x")
    assert isinstance(var.value, jax.Array)
    assert var.value.weak_type


def test_jax_array_is_stored_as_is():
    array = jnp.ones(3)
    assert sk.Parameter(label="w", value=array).value is array


def test_non_array_structure_is_kept():
    var = sk.StateVariable([None, {"a": 1}], label="x")
    assert var.value[0] is None
    assert isinstance(var.value[1]["a"], jax.Array)


def test_shape_dtype_struct_is_kept():
    spec = jax.ShapeDtypeStruct((2,), jnp.float32)
    assert sk.Parameter(label="w", value=spec).value is spec


def test_string_value_is_refused_with_label():
    with pytest.raises(TypeError, match="'w'"):
        sk.Parameter(label="w", value=["text"])


def test_set_value_assigns():
    var = sk.StateVariable(0, label="x")
    var.set_value(4)
    assert int(var.value) == 4


def test_metadata_defaults_to_empty_dict():
    assert sk.Parameter(label="w", value=1.0).metadata == {}
    assert sk.StateVariable(1, metadata={"k": 1}).metadata == {"k": 1}


def test_repr_is_one_line():
    var = sk.Parameter(label="w", value=jnp.ones((3, 4)))
    assert "\n" not in repr(var)
    assert repr(var).startswith("Parameter(label='w'")


# Frozen values and slots -----------------------------------------------------------


def test_freeze_snapshots_label_value_metadata():
    var = sk.Parameter(label="w", value=2.0, metadata={"trainable": False})
    frozen = var.freeze()
    assert isinstance(frozen, sk.ParameterValue)
    assert (frozen.label, float(frozen.value), frozen.metadata) == ("w", 2.0, {"trainable": False})
    var.value = 3.0
    assert float(frozen.value) == 2.0


def test_frozen_value_has_only_the_value_as_child():
    frozen = sk.StateVariable({"a": 1.0, "b": 2.0}, label="s").freeze()
    assert isinstance(frozen, sk.StateVariableValue)
    assert [float(x) for x in jax.tree_util.tree_leaves(frozen)] == [1.0, 2.0]


def test_unfreeze_as_copy_makes_new_variable():
    var = sk.StateVariable(1, label="s")
    copy = var.freeze().unfreeze_as_copy()
    assert isinstance(copy, sk.StateVariable) and copy is not var
    assert copy.label == "s" and int(copy.value) == 1


def test_slots_agree_between_variable_and_frozen_value():
    var = sk.Parameter(label="w", value=1.0)
    assert var.get_slot() == var.freeze().get_slot() == sk.ParameterSlot("w")


def test_slots_are_childless_and_hashable():
    slot = sk.StateVariableSlot("s")
    assert jax.tree_util.tree_leaves(slot) == []
    assert {slot: 1}[sk.StateVariableSlot("s")] == 1


def test_slots_of_different_kinds_differ():
    assert sk.ParameterSlot("w") != sk.StateVariableSlot("w")


def test_slot_value_explains_how_to_bind():
    with pytest.raises(sk.UnboundVariableError, match="bind_variables"):
        _ = sk.ParameterSlot("w").value


def test_update_sets_value():
    var = sk.Parameter(label="w", value=1.0)
    var.update(sk.ParameterValue(label="w", value=5.0))
    assert float(var.value) == 5.0


def test_update_refuses_other_slot():
    var = sk.Parameter(label="w", value=1.0)
    with pytest.raises(ValueError, match="'w'"):
        var.update(sk.StateVariableValue(label="w", value=5.0))


# Unbind / bind / freeze -------------------------------------------------------------


@sk.pytree_dataclass
class _Layer(sk.Struct):
    weight: object
    bias: object


def test_unbind_replaces_variables_with_slots():
    w = sk.Parameter(label="w", value=1.0)
    tree, variables = sk.unbind_variables(_Layer(weight=w, bias=3.0))
    assert tree == _Layer(weight=sk.ParameterSlot("w"), bias=3.0)
    assert variables == (w,)


def test_unbind_returns_shared_variable_once():
    w = sk.Parameter(label="w", value=1.0)
    tree, variables = sk.unbind_variables([w, {"again": w}])
    assert len(variables) == 1 and variables[0] is w
    assert tree == [sk.ParameterSlot("w"), {"again": sk.ParameterSlot("w")}]


def test_unbind_orders_variables_by_first_appearance():
    a = sk.Parameter(label="a", value=1.0)
    b = sk.StateVariable(0, label="b")
    _, variables = sk.unbind_variables([b, a, b])
    assert [v.label for v in variables] == ["b", "a"]


def test_unbind_conflict_names_label_and_paths():
    tree = _Layer(
        weight=sk.Parameter(label="w", value=1.0), bias=sk.Parameter(label="w", value=2.0)
    )
    with pytest.raises(sk.VariableConflictError, match=r"label='w'.*_Layer\.weight.*_Layer\.bias"):
        sk.unbind_variables(tree)


def test_unbind_conflict_with_existing_slot():
    tree = [sk.ParameterSlot("w"), sk.Parameter(label="w", value=1.0)]
    with pytest.raises(sk.VariableConflictError, match="already holds"):
        sk.unbind_variables(tree)


def test_unbind_same_label_different_kinds_is_fine():
    tree = [sk.Parameter(label="x", value=1.0), sk.StateVariable(0, label="x")]
    _, variables = sk.unbind_variables(tree)
    assert len(variables) == 2


def test_unbind_with_predicate_keeps_others():
    w = sk.Parameter(label="w", value=1.0)
    s = sk.StateVariable(0, label="s")
    tree, variables = sk.unbind_variables([w, s], predicate=lambda v: v.label == "s")
    assert tree[0] is w and tree[1] == sk.StateVariableSlot("s")
    assert variables == (s,)


def test_unbind_freeze_returns_values():
    _, values = sk.unbind_variables([sk.Parameter(label="w", value=1.0)], freeze=True)
    assert isinstance(values[0], sk.ParameterValue)


def test_unbind_without_variables_returns_tree():
    tree = {"a": [1, 2]}
    assert sk.unbind_variables(tree) == (tree, ())


def test_bind_restores_same_objects():
    w = sk.Parameter(label="w", value=1.0)
    tree, variables = sk.unbind_variables([w, w, 5])
    rebound = sk.bind_variables(tree, variables)
    assert rebound[0] is w and rebound[1] is w and rebound[2] == 5


def test_bind_frozen_values_inserts_them_as_is():
    tree, values = sk.unbind_variables([sk.Parameter(label="w", value=1.0)], freeze=True)
    assert sk.bind_variables(tree, values)[0] is values[0]


def test_bind_unfreeze_as_copy_builds_new_variables():
    w = sk.Parameter(label="w", value=1.0)
    tree, values = sk.unbind_variables([w], freeze=True)
    rebound = sk.bind_variables(tree, values, unfreeze_as_copy=True)
    assert isinstance(rebound[0], sk.Parameter) and rebound[0] is not w


def test_bind_unfreeze_as_copy_refuses_variables():
    with pytest.raises(TypeError, match="frozen values"):
        sk.bind_variables(
            [sk.ParameterSlot("w")], [sk.Parameter(label="w", value=1.0)], unfreeze_as_copy=True
        )


def test_bind_unused_variable_names_label():
    extra = sk.Parameter(label="extra", value=1.0)
    with pytest.raises(ValueError, match="extra"):
        sk.bind_variables([sk.ParameterSlot("w")], [extra])


def test_bind_allow_unused():
    extra = sk.Parameter(label="extra", value=1.0)
    assert sk.bind_variables([1], [extra], allow_unused=True) == [1]


def test_bind_leaves_unmatched_slots():
    w = sk.Parameter(label="w", value=1.0)
    rebound = sk.bind_variables([sk.ParameterSlot("w"), sk.ParameterSlot("z")], [w])
    assert rebound == [w, sk.ParameterSlot("z")]


def test_bind_two_variables_for_one_slot_conflict():
    a = sk.Parameter(label="w", value=1.0)
    b = sk.Parameter(label="w", value=2.0)
    with pytest.raises(sk.VariableConflictError, match="label='w'"):
        sk.bind_variables([sk.ParameterSlot("w")], [a, b])


def test_bind_refuses_non_variables():
    with pytest.raises(TypeError, match="ParameterSlot"):
        sk.bind_variables([sk.ParameterSlot("w")], [sk.ParameterSlot("w")])


def test_freeze_variables_with_predicate():
    w = sk.Parameter(label="w", value=1.0)
    s = sk.StateVariable(0, label="s")
    frozen = sk.freeze_variables([w, s, 3], predicate=lambda v: v.label == "w")
    assert isinstance(frozen[0], sk.ParameterValue) and frozen[1] is s and frozen[2] == 3


def test_typed_variants_select_their_kind():
    w = sk.Parameter(label="w", value=1.0)
    s = sk.StateVariable(0, label="s")
    assert sk.unbind_params([w, s])[1] == (w,)
    assert sk.unbind_state_vars([w, s])[1] == (s,)
    assert isinstance(sk.freeze_params([w, s])[0], sk.ParameterValue)
    assert sk.freeze_params([w, s])[1] is s
    assert isinstance(sk.freeze_state_vars([w, s])[1], sk.StateVariableValue)


def test_typed_variant_combines_predicate_and_freeze():
    a = sk.Parameter(label="a", value=1.0)
    b = sk.Parameter(label="b", value=2.0)
    tree, values = sk.unbind_params([a, b], predicate=lambda p: p.label == "b", freeze=True)
    assert tree[0] is a and [v.label for v in values] == ["b"]
    assert isinstance(values[0], sk.ParameterValue)


def test_grad_through_frozen_params():
    @sk.pytree_dataclass
    class Scale(sk.Struct):
        factor: object

        def __call__(self, x):
            return jnp.sum(self.factor.value * x**2)

    model = Scale(factor=sk.Parameter(label="f", value=3.0))
    slots, params = sk.unbind_params(model, freeze=True)
    x = jnp.array([1.0, 2.0])

    def loss(params):
        return sk.bind_variables(slots, params)(x)

    grads = jax.grad(loss)(params)
    assert grads[0].label == "f"
    np.testing.assert_allclose(grads[0].value, 1.0**2 + 2.0**2)


# variable_jit ------------------------------------------------------------------------


# variable_jit has two implementations: a flat one used by default, and one that
# keeps arguments in place, used when a jit option names arguments. Every
# behaviour is checked on both.
@pytest.fixture(params=[{}, {"static_argnames": ()}], ids=["flat", "keyword"])
def vjit(request):
    return functools.partial(sk.variable_jit, **request.param)


@sk.pytree_dataclass
class _Counter(sk.Struct):
    scale: object
    calls: object

    def __call__(self, x):
        self.calls.value = self.calls.value + 1
        return x * self.scale.value


def _counter():
    return _Counter(
        scale=sk.Parameter(label="scale", value=2.0), calls=sk.StateVariable(0, label="n")
    )


def test_variable_jit_writes_state_back(vjit):
    model = _counter()
    run = vjit(lambda m, x: m(x))
    assert float(run(model, 3.0)) == 6.0
    run(model, 3.0)
    assert int(model.calls.value) == 2


def test_variable_jit_does_not_retrace_same_structure(vjit):
    traces = []

    def fun(m, x):
        traces.append(None)
        return m(x)

    run = vjit(fun)
    model = _counter()
    run(model, 1.0)
    run(model, 2.0)
    run(_counter(), 3.0)
    assert len(traces) == 1


def test_variable_jit_accepts_variables_in_kwargs(vjit):
    run = vjit(lambda x, *, model: model(x))
    model = _counter()
    run(1.0, model=model)
    assert int(model.calls.value) == 1


def test_variable_jit_keeps_unchanged_parameter_buffers(vjit):
    model = _counter()
    weight = model.scale.value
    vjit(lambda m, x: m(x))(model, 1.0)
    assert model.scale.value is weight


def test_variable_jit_writes_back_changed_parameter(vjit):
    param = sk.Parameter(label="p", value=1.0)

    @vjit
    def double(p):
        p.value = p.value * 2

    double(param)
    assert float(param.value) == 2.0


def test_variable_jit_handles_value_structure_change(vjit):
    state = sk.StateVariable(1.0, label="s")

    @vjit
    def wrap(s):
        s.value = {"inner": s.value}

    wrap(state)
    assert float(state.value["inner"]) == 1.0


def test_variable_jit_shared_variable_passed_twice(vjit):
    state = sk.StateVariable(0, label="s")

    @vjit
    def bump(a, b):
        a.value = a.value + 1
        b.value = b.value + 1

    bump(state, state)
    assert int(state.value) == 2


def test_variable_jit_refuses_returned_variables(vjit):
    @vjit
    def leak(m):
        return m.calls

    with pytest.raises(ValueError, match="returned variables"):
        leak(_counter())


def test_variable_jit_refuses_captured_variable_read(vjit):
    captured = sk.Parameter(label="captured", value=1.0)

    @vjit
    def fun(x):
        return x * captured.value

    with pytest.raises(RuntimeError, match=r"'captured'.*not passed"):
        fun(1.0)


def test_variable_jit_refuses_captured_variable_write(vjit):
    captured = sk.StateVariable(0, label="captured")

    @vjit
    def fun(x):
        captured.value = x

    with pytest.raises(RuntimeError, match="captured"):
        fun(1.0)
    assert int(captured.value) == 0


def test_variable_jit_after_error_allows_normal_access(vjit):
    captured = sk.StateVariable(0, label="c")
    with pytest.raises(RuntimeError):
        vjit(lambda x: captured.value + x)(1)
    captured.value = 5
    assert int(captured.value) == 5


def test_variable_jit_donation_updates_state_and_keeps_params(vjit):
    model = _counter()
    run = vjit(lambda m, x: m(x), donate_variables=True)
    run(model, 1.0)
    state_before, weight_before = model.calls.value, model.scale.value
    run(model, 1.0)
    assert int(model.calls.value) == 2
    assert state_before.is_deleted()
    assert not weight_before.is_deleted() and model.scale.value is weight_before


def test_variable_jit_static_argnames():
    traces = []

    def repeat_add(x, s, n):
        traces.append(n)
        for _ in range(n):  # needs a concrete n
            s.value = s.value + x
        return s.value

    run = sk.variable_jit(repeat_add, static_argnames="n")
    state = sk.StateVariable(0.0, label="s")
    run(1.0, state, n=3)
    run(2.0, state, n=3)
    assert float(state.value) == 9.0
    assert traces == [3]


def test_variable_jit_static_argnums_with_donation():
    def repeat_add(x, s, n):
        for _ in range(n):
            s.value = s.value + x

    run = sk.variable_jit(repeat_add, static_argnums=2, donate_variables=True)
    state = sk.StateVariable(0.0, label="s")
    run(1.0, state, 2)
    run(1.0, state, 2)
    assert float(state.value) == 4.0


def test_variable_jit_reports_label_conflict(vjit):
    a = sk.StateVariable(0, label="s")
    b = sk.StateVariable(0, label="s")
    with pytest.raises(sk.VariableConflictError, match="label='s'"):
        vjit(lambda x, y: None)(a, b)


def test_variable_jit_nested(vjit):
    inner = vjit(lambda m, x: m(x))
    outer = vjit(lambda m, x: inner(m, x) + inner(m, x))
    model = _counter()
    assert float(outer(model, 1.0)) == 4.0
    assert int(model.calls.value) == 2


def test_variable_jit_frozen_and_slot_arguments_pass_through(vjit):
    model = _counter()
    frozen = sk.freeze_variables(model)
    out = vjit(lambda m: m.scale.value * 3)(frozen)
    assert float(out) == 6.0


def test_variable_jit_keeps_metadata_inside(vjit):
    param = sk.Parameter(label="p", value=1.0, metadata={"trainable": False})
    seen = []

    @vjit
    def fun(p):
        seen.append(dict(p.metadata))
        return p.value

    fun(param)
    assert seen == [{"trainable": False}]


def test_variable_jit_reserved_kwarg():
    run = sk.variable_jit(lambda **kw: 0, static_argnames=())
    with pytest.raises(TypeError, match="reserved"):
        run(__saikei_variables=1)


def test_variable_jit_preserves_function_metadata(vjit):
    def my_function(x):
        """Docs."""
        return x

    wrapped = vjit(my_function)
    assert wrapped.__name__ == "my_function" and wrapped.__doc__ == "Docs."


def test_variable_jit_custom_variable_type(vjit):
    @sk.pytree_dataclass
    class BoxValue(sk.AbstractVariableValue):
        contents: object
        name: str = dataclasses.field(metadata={"pytree_node": False})

        def unfreeze_as_copy(self):
            return Box(self.name, self.contents)

        def get_slot(self):
            return BoxSlot(self.name)

    @sk.pytree_dataclass
    class BoxSlot(sk.AbstractVariableSlot):
        name: str = dataclasses.field(metadata={"pytree_node": False})

    class Box(sk.AbstractVariable):
        def __init__(self, name, contents):
            self.name = name
            self.contents = contents

        @property
        def value(self):
            return self.contents

        def freeze(self):
            return BoxValue(contents=self.contents, name=self.name)

        def get_slot(self):
            return BoxSlot(self.name)

        def update(self, new_frozen_value):
            self.contents = new_frozen_value.contents

    box = Box("b", jnp.array(1.0))

    @vjit
    def bump(b):
        b.contents = b.contents + 1

    bump(box)
    assert float(box.contents) == 2.0
