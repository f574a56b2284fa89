"""Groups of layers: Sequential, NamedGroup, CheckedSequential, and inlining."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import jax

from saikei.core import shapecheck
from saikei.core._struct import pytree_dataclass
from saikei.core._tree_util import tree_flatten_exactly_one_level
from saikei.nn._layer import Layer


def _run_in_order(sublayers: list[Any], value: Any, side_inputs: dict[str, Any]) -> Any:
    for index, layer in enumerate(sublayers):
        with jax.named_scope(f"{index}_{type(layer).__name__}"):
            value = layer(value, **side_inputs)
    return value


@pytree_dataclass
class Sequential(Layer):
    """Runs its sublayers one after another, passing every side input to each.

    Subclass it (with `@sk.pytree_dataclass(has_implicitly_inherited_fields=True)`)
    to give a group of layers a name and a `from_config` constructor, as
    `simple_mlp.MLP` does; the subclass keeps this `__call__`.

    Attributes:
      sublayers: The layers to run, in order.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> double = sk.nn.Elementwise(lambda x: 2 * x)
      >>> sk.nn.Sequential([double, double])(jnp.ones(2))
      Array([4., 4.], dtype=float32)
    """

    sublayers: list[Any]

    @typing.final
    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return _run_in_order(self.sublayers, value, side_inputs)


@pytree_dataclass
class NamedGroup(Layer):
    """A Sequential with a name, for grouping layers without a new class.

    Attributes:
      name: A label shown when the model is rendered.
      sublayers: The layers to run, in order.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> group = sk.nn.NamedGroup("scale", [sk.nn.Elementwise(lambda x: 3 * x)])
      >>> group(jnp.ones(1))
      Array([3.], dtype=float32)
    """

    name: str = dataclasses.field(metadata={"pytree_node": False})
    sublayers: list[Any] = dataclasses.field(default_factory=list)

    @typing.final
    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return _run_in_order(self.sublayers, value, side_inputs)


@pytree_dataclass
class CheckedSequential(Layer):
    """A Sequential whose input and output are checked against structures.

    Dimension variables are shared between `input_like` and `output_like`, so
    the check can say "the output has the same batch size as the input".

    Attributes:
      input_like: The expected input, as a tree of `sk.chk.ArraySpec`.
      sublayers: The layers to run, in order.
      output_like: The expected output, with the same dimension variables.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> n = sk.chk.var("n")
      >>> layer = sk.nn.CheckedSequential(
      ...     input_like=sk.chk.ArraySpec(shape=(n,)),
      ...     sublayers=[sk.nn.Elementwise(jnp.sin)],
      ...     output_like=sk.chk.ArraySpec(shape=(n,)))
      >>> layer(jnp.zeros(3)).shape
      (3,)
    """

    input_like: Any = dataclasses.field(metadata={"treescope_always_collapse": True})
    sublayers: list[Any]
    output_like: Any = dataclasses.field(metadata={"treescope_always_collapse": True})

    @typing.final
    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        known = shapecheck.check_structure(
            value, self.input_like, error_prefix="CheckedSequential input: "
        )
        result = _run_in_order(self.sublayers, value, side_inputs)
        shapecheck.check_structure(
            result, self.output_like, known_vars=known, error_prefix="CheckedSequential output: "
        )
        return result


@pytree_dataclass
class Identity(Layer):
    """Returns its argument unchanged.

    Example:
      >>> from saikei import sk
      >>> sk.nn.Identity()(5)
      5
    """

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return value


@pytree_dataclass
class CheckStructure(Layer):
    """Checks that its argument matches a structure, then returns it unchanged.

    Attributes:
      expected: A tree of `sk.chk.ArraySpec` (or other values compared by
        equality) that the argument must match.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> check = sk.nn.CheckStructure(sk.chk.ArraySpec(named_shape={"features": 4}))
      >>> check(sk.nx.ones({"features": 4})).named_shape
      {'features': 4}
    """

    expected: Any = dataclasses.field(metadata={"treescope_always_collapse": True})

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        shapecheck.check_structure(value, self.expected, error_prefix="CheckStructure: ")
        return value


_GROUP_TYPES = (Sequential, NamedGroup, CheckedSequential)


def is_sequential_or_named(node: Any) -> bool:
    """Whether `node` is a `Sequential` (or subclass) or a `NamedGroup`.

    Example:
      >>> from saikei import sk
      >>> sk.nn.is_sequential_or_named(sk.nn.NamedGroup("g", []))
      True
    """
    return isinstance(node, Sequential | NamedGroup)


def is_anonymous_sequential(node: Any) -> bool:
    """Whether `node` is exactly a `Sequential` (not a named subclass).

    Example:
      >>> from saikei import sk
      >>> sk.nn.is_anonymous_sequential(sk.nn.Sequential([]))
      True
    """
    return type(node) is Sequential


def _with_sublayers(group: Any, sublayers: list[Any]) -> Any:
    attributes = group.attributes_dict()
    attributes["sublayers"] = sublayers
    return type(group).from_attributes(**attributes)


def inline_groups(
    tree: Any,
    parent_filter: Callable[[Any], bool],
    child_filter: Callable[[Any], bool],
) -> Any:
    """Splices the sublayers of matching child groups into matching parent groups.

    Works bottom-up: a group that matches both filters first absorbs its own
    children, then may be absorbed by its parent. Only `Sequential` (and
    subclasses), `NamedGroup` and `CheckedSequential` nodes take part.

    Args:
      tree: Any pytree holding layers.
      parent_filter: Selects the groups whose sublayer lists are flattened.
      child_filter: Selects the groups that disappear into their parent.

    Returns:
      A copy of `tree` with those groups inlined.

    Example:
      >>> from saikei import sk
      >>> a, b = sk.nn.Identity(), sk.nn.Elementwise(abs)
      >>> nested = sk.nn.Sequential([a, sk.nn.Sequential([b, a])])
      >>> flat = sk.nn.inline_groups(nested, sk.nn.is_sequential_or_named,
      ...                            sk.nn.is_anonymous_sequential)
      >>> len(flat.sublayers)
      3
    """

    def process(node: Any) -> Any:
        flat = tree_flatten_exactly_one_level(node)
        if flat is None:
            return node
        children, treedef = flat
        node = treedef.unflatten([process(child) for _, child in children])
        if isinstance(node, _GROUP_TYPES) and parent_filter(node):
            spliced: list[Any] = []
            changed = False
            for sublayer in node.sublayers:
                if isinstance(sublayer, _GROUP_TYPES) and child_filter(sublayer):
                    spliced.extend(sublayer.sublayers)
                    changed = True
                else:
                    spliced.append(sublayer)
            if changed:
                node = _with_sublayers(node, spliced)
        return node

    return process(tree)


def inline_anonymous_sequentials(tree: Any) -> Any:
    """Inlines plain `Sequential`s into any enclosing Sequential or NamedGroup.

    Example:
      >>> from saikei import sk
      >>> nested = sk.nn.Sequential([sk.nn.Sequential([sk.nn.Identity()]), sk.nn.Identity()])
      >>> len(sk.nn.inline_anonymous_sequentials(nested).sublayers)
      2
    """
    return inline_groups(tree, is_sequential_or_named, is_anonymous_sequential)
