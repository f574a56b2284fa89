"""Tests for Struct and pytree_dataclass."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk


def test_fields_are_children_unless_static():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        value: object
        name: str = dataclasses.field(metadata={"pytree_node": False})

    leaves, treedef = jax.tree_util.tree_flatten(Box(value=[1, 2], name="b"))
    assert leaves == [1, 2]
    rebuilt = treedef.unflatten([3, 4])
    assert rebuilt == Box(value=[3, 4], name="b")


def test_static_fields_are_part_of_the_structure():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        value: object
        name: str = dataclasses.field(metadata={"pytree_node": False})

    assert jax.tree_util.tree_structure(Box(1, "a")) != jax.tree_util.tree_structure(Box(1, "b"))
    assert jax.tree_util.tree_structure(Box(1, "a")) == jax.tree_util.tree_structure(Box(2, "a"))


def test_keypaths_are_readable_attribute_accesses():
    @sk.pytree_dataclass
    class Inner(sk.Struct):
        weights: object

    @sk.pytree_dataclass
    class Outer(sk.Struct):
        sublayers: list

    tree = Outer(sublayers=[Inner(weights=1), Inner(weights=2)])
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == [".sublayers[0].weights", ".sublayers[1].weights"]


def test_structs_are_frozen_with_a_helpful_error():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        value: int

    box = Box(1)
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"'value'.*immutable"):
        box.value = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del box.value


def test_equality_and_hash_follow_fields():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        value: int

    assert Box(1) == Box(1)
    assert Box(1) != Box(2)
    assert hash(Box(1)) == hash(Box(1))


def test_jit_roundtrip_with_array_children():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        value: jax.Array
        scale: float = dataclasses.field(metadata={"pytree_node": False})

    out = jax.jit(lambda b: Box(b.value * b.scale, b.scale))(Box(jnp.arange(3.0), 2.0))
    np.testing.assert_allclose(out.value, [0.0, 2.0, 4.0])
    assert out.scale == 2.0


def test_custom_init_may_assign_fields():
    @sk.pytree_dataclass
    class Doubled(sk.Struct):
        x: int
        y: int

        def __init__(self, base):
            self.x = base
            self.y = base * 2

    d = Doubled(3)
    assert (d.x, d.y) == (3, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.x = 0
    # Unflattening bypasses the custom __init__.
    assert jax.tree_util.tree_map(lambda v: v + 1, d) == Doubled.from_attributes(x=4, y=7)


def test_custom_init_that_forgets_a_field_names_it():
    @sk.pytree_dataclass
    class Incomplete(sk.Struct):
        x: int
        y: int

        def __init__(self):
            self.x = 1

    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"\['y'\]"):
        Incomplete()


def test_custom_init_calling_parent_custom_init():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        x: int

        def __init__(self, x):
            self.x = x

    @sk.pytree_dataclass(has_implicitly_inherited_fields=True)
    class Child(Base):
        y: int

        def __init__(self, x, y):
            super().__init__(x)
            self.y = y

    assert Child(1, 2).attributes_dict() == {"x": 1, "y": 2}


def test_inherited_fields_must_be_acknowledged():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        a: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match="has_implicitly_inherited_fields"):

        @sk.pytree_dataclass
        class Child(Base):
            b: int

    @sk.pytree_dataclass(has_implicitly_inherited_fields=True)
    class Child2(Base):
        b: int

    assert Child2(1, 2).attributes_dict() == {"a": 1, "b": 2}


def test_field_mismatch_names_the_missing_or_misordered_fields():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        first: int

    with pytest.raises(
        sk.PyTreeDataclassSafetyError, match=r"\['first'\] inherited .* not declared"
    ):

        @sk.pytree_dataclass
        class Child(Base):
            second: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match="different order"):

        @sk.pytree_dataclass
        class Reordered(Base):
            second: int
            first: int


def test_flag_without_inherited_fields_is_refused():
    with pytest.raises(sk.PyTreeDataclassSafetyError, match="inherits no fields"):

        @sk.pytree_dataclass(has_implicitly_inherited_fields=True)
        class Lonely(sk.Struct):
            a: int


def test_fields_out_of_order_are_refused():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        a: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"\['b', 'a'\]"):

        @sk.pytree_dataclass
        class Child(Base):
            b: int
            a: int


def test_refuses_to_replace_parent_custom_init():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        a: int

        def __init__(self):
            self.a = 0

    with pytest.raises(
        sk.PyTreeDataclassSafetyError, match="hand-written __init__ of its parent Base"
    ):

        @sk.pytree_dataclass(has_implicitly_inherited_fields=True)
        class Child(Base):
            pass

    @sk.pytree_dataclass(has_implicitly_inherited_fields=True, overwrite_parent_init=True)
    class Child2(Base):
        pass

    assert Child2(5).a == 5

    @sk.pytree_dataclass(has_implicitly_inherited_fields=True, init=False)
    class Child3(Base):
        pass

    assert Child3().a == 0


def test_decorating_twice_is_refused():
    @sk.pytree_dataclass
    class Box(sk.Struct):
        a: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match="once"):
        sk.pytree_dataclass(Box)


def test_non_struct_class_is_refused():
    class Plain:
        a: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"sk\.Struct"):
        sk.pytree_dataclass(Plain)


def test_undecorated_subclass_is_abstract():
    class Abstract(sk.Struct):
        a: int

    with pytest.raises(TypeError, match="abstract Struct subclass"):
        Abstract()


def test_classvar_annotations_are_not_fields():
    from typing import ClassVar

    @sk.pytree_dataclass
    class WithClassVar(sk.Struct):
        kind: ClassVar[str] = "x"
        a: int

    assert [f.name for f in dataclasses.fields(WithClassVar)] == ["a"]


def test_from_attributes_checks_the_field_set():
    @sk.pytree_dataclass
    class Pair(sk.Struct):
        left: int
        right: int

        def __init__(self):
            raise AssertionError("from_attributes must not call __init__")

    assert Pair.from_attributes(left=1, right=2).attributes_dict() == {"left": 1, "right": 2}
    with pytest.raises(ValueError, match=r"missing \['right'\]"):
        Pair.from_attributes(left=1)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        Pair.from_attributes(left=1, right=2, extra=3)


def test_custom_key_for_field():
    from saikei.core import CustomGetAttrKey

    @dataclasses.dataclass(frozen=True)
    class TaggedKey(CustomGetAttrKey):
        tag: str = ""

    @sk.pytree_dataclass
    class Keyed(sk.Struct):
        body: object

        def key_for_field(self, field_name):
            return TaggedKey(field_name, "stacked")

    ((path, leaf),) = jax.tree_util.tree_flatten_with_path(Keyed(body=3))[0]
    assert path == (TaggedKey("body", "stacked"),)
    assert jax.tree_util.keystr(path) == ".body"
    assert leaf == 3


def test_pretty_keystr_names_each_struct_type():
    @sk.pytree_dataclass
    class Leafy(sk.Struct):
        weights: object

    @sk.pytree_dataclass
    class Group(sk.Struct):
        sublayers: list

    tree = {"model": Group(sublayers=[Leafy(weights=np.zeros(2)), Leafy(weights=1)])}
    paths = [sk.pretty_keystr(p, tree) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == [
        "['model']/Group.sublayers[0]/Leafy.weights",
        "['model']/Group.sublayers[1]/Leafy.weights",
    ]


def test_slice_sugar():
    assert sk.slice[1:3] == slice(1, 3)
    assert sk.slice[::2] == slice(None, None, 2)


def test_tree_flatten_exactly_one_level():
    from saikei.core import tree_flatten_exactly_one_level

    children, treedef = tree_flatten_exactly_one_level({"a": [1, 2], "b": None})
    assert [(jax.tree_util.keystr((k,)), v) for k, v in children] == [
        ("['a']", [1, 2]),
        ("['b']", None),
    ]
    assert treedef.unflatten(["x", "y"]) == {"a": "x", "b": "y"}
    assert tree_flatten_exactly_one_level(np.zeros(3)) is None
    assert tree_flatten_exactly_one_level(5) is None
    children, treedef = tree_flatten_exactly_one_level(None)
    assert children == [] and treedef.unflatten([]) is None


# --- penzai compatibility (issue 14) ---------------------------------------


def test_class_with_its_own_keyed_flatten_methods_is_a_pytree():
    # penzai registers any class that brings `tree_flatten_with_keys` and
    # `tree_unflatten`; plain flattening is derived from the keyed one.
    @sk.pytree_dataclass
    class Pair:
        left: int
        right: int

        def tree_flatten_with_keys(self):
            keys = (jax.tree_util.GetAttrKey("left"), jax.tree_util.GetAttrKey("right"))
            return list(zip(keys, (self.left, self.right))), None

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(*children)

    pair = Pair(1, 2)
    assert jax.tree_util.tree_leaves(pair) == [1, 2]
    assert jax.tree_util.tree_map(lambda x: x * 10, pair) == Pair(10, 20)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(pair)[0]]
    assert paths == [".left", ".right"]
    assert repr(pair).endswith("Pair(left=1, right=2)")  # a dataclass repr, as in penzai


def test_class_missing_tree_unflatten_is_refused_at_decoration():
    with pytest.raises(sk.PyTreeDataclassSafetyError, match="no tree_unflatten method"):

        @sk.pytree_dataclass
        class Half:
            a: int

            def tree_flatten_with_keys(self):
                return [], None


def test_implicit_inheritance_may_redeclare_an_inherited_field():
    # The re-declared field keeps its inherited position (x, y, z).
    @sk.pytree_dataclass
    class Base(sk.Struct):
        x: int
        y: int
        z: int = 0

    @sk.pytree_dataclass(has_implicitly_inherited_fields=True)
    class Child(Base):
        y: int = 2

    assert [f.name for f in dataclasses.fields(Child)] == ["x", "y", "z"]
    assert Child(1) == Child(x=1, y=2, z=0)
    assert jax.tree_util.tree_leaves(Child(1, 5)) == [1, 5, 0]


def test_implicit_inheritance_flag_with_every_field_redeclared_is_refused():
    @sk.pytree_dataclass
    class Base(sk.Struct):
        x: int
        y: int

    with pytest.raises(sk.PyTreeDataclassSafetyError, match="inherits no fields"):

        @sk.pytree_dataclass(has_implicitly_inherited_fields=True)
        class Child(Base):
            y: int
            x: int


def test_init_without_mutable_proxy_runs_on_the_frozen_object():
    @sk.pytree_dataclass(use_mutable_proxy_in_init=False)
    class Doubled(sk.Struct):
        a: int
        b: int

        def __init__(self, a):
            object.__setattr__(self, "a", a)
            object.__setattr__(self, "b", 2 * a)

    assert Doubled(3) == Doubled.from_attributes(a=3, b=6)

    @sk.pytree_dataclass(use_mutable_proxy_in_init=False)
    class Assigning(sk.Struct):
        a: int

        def __init__(self, a):
            self.a = a

    with pytest.raises(dataclasses.FrozenInstanceError):
        Assigning(1)


def test_init_with_mutable_proxy_may_assign_fields_and_must_set_all():
    @sk.pytree_dataclass(use_mutable_proxy_in_init=True)
    class Assigning(sk.Struct):
        a: int
        b: int

        def __init__(self, a, set_b=True):
            self.a = a
            if set_b:
                self.b = a + 1

    assert Assigning(1).b == 2
    with pytest.raises(sk.PyTreeDataclassSafetyError, match=r"\['b'\]"):
        Assigning(1, set_b=False)
