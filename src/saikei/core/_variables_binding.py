"""Moving variables out of and back into pytrees: unbind, bind and freeze."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

from saikei.core._tree_util import pretty_keystr
from saikei.core._variables_types import (
    _SLOT_TYPES,
    _VALUE_TYPES,
    _VARIABLE_TYPES,
    AbstractVariable,
    AbstractVariableSlot,
    AbstractVariableValue,
    Parameter,
    ParameterValue,
    StateVariable,
    StateVariableValue,
    VariableConflictError,
)

_tree_flatten = jax.tree_util.tree_flatten


def _is_slot(node: Any) -> bool:
    return node.__class__ in _SLOT_TYPES


def _paths_of(tree: Any, indices: Iterable[int]) -> list[str]:
    """Readable keypaths of the given leaf positions (slots counted as leaves).

    Only called to build error messages: it flattens the tree a second time.
    """
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_slot)
    return [pretty_keystr(with_path[i][0], tree) or "<root>" for i in indices]


def unbind_variables(
    tree: Any,
    predicate: Callable[[AbstractVariable], bool] | None = None,
    freeze: bool = False,
) -> tuple[Any, tuple[AbstractVariable | AbstractVariableValue, ...]]:
    """Takes the variables out of a tree, leaving slots in their places.

    A variable object may appear at several places in the tree (parameter
    sharing); it is returned once and every place gets the same slot.

    Args:
      tree: A pytree that may hold variables at its leaves.
      predicate: If given, only variables for which it returns True are taken
        out; the others stay in the tree.
      freeze: Return frozen values (`var.freeze()`) instead of the variables.

    Returns:
      `(tree_with_slots, variables)`: a copy of `tree` with each taken variable
      replaced by `var.get_slot()`, and the tuple of taken variables (or their
      frozen values) in the order they first appear in the tree.

    Raises:
      VariableConflictError: if two different variable objects have the same
        slot (e.g. two Parameters labeled "w"), or if the tree already holds a
        slot equal to one of the taken variables' slots.

    Example:
      >>> from saikei import sk
      >>> shared = sk.Parameter(label="w", value=1.0)
      >>> tree, variables = sk.unbind_variables({"a": shared, "b": shared, "c": 2})
      >>> tree
      {'a': ParameterSlot(label='w'), 'b': ParameterSlot(label='w'), 'c': 2}
      >>> variables[0] is shared
      True
    """
    leaves, treedef = _tree_flatten(tree, is_leaf=_is_slot)
    found: dict[AbstractVariableSlot, AbstractVariable] = {}
    first_index: dict[AbstractVariableSlot, int] = {}
    existing_slots: dict[AbstractVariableSlot, int] = {}
    variable_types = _VARIABLE_TYPES
    slot_types = _SLOT_TYPES
    replaced = False
    for index, leaf in enumerate(leaves):
        cls = leaf.__class__
        if cls in variable_types:
            if predicate is not None and not predicate(leaf):
                continue
            slot = leaf.get_slot()
            previous = found.get(slot)
            if previous is None:
                found[slot] = leaf
                first_index[slot] = index
            elif previous is not leaf:
                where = _paths_of(tree, (first_index[slot], index))
                raise VariableConflictError(
                    f"Two different variables have the slot {slot!r}, at"
                    f" {where[0]} and at {where[1]}. A label must name a single"
                    " variable object within a tree: give one of them another"
                    " label, or put the same object in both places to share it."
                )
            leaves[index] = slot
            replaced = True
        elif cls in slot_types:
            existing_slots.setdefault(leaf, index)
    if existing_slots:
        for slot, index in existing_slots.items():
            if slot in found:
                where = _paths_of(tree, (index, first_index[slot]))
                raise VariableConflictError(
                    f"The tree already holds the slot {slot!r} at {where[0]}, so the"
                    f" variable at {where[1]} cannot be unbound into that slot: the"
                    " two would become indistinguishable. Bind the existing slot"
                    " first, or relabel the variable."
                )
    variables = tuple(found.values())
    if freeze:
        variables = tuple(var.freeze() for var in variables)
    if not replaced:
        return tree, variables
    return treedef.unflatten(leaves), variables


def bind_variables(
    tree: Any,
    variables: Iterable[AbstractVariable | AbstractVariableValue],
    allow_unused: bool = False,
    unfreeze_as_copy: bool = False,
) -> Any:
    """Puts variables (or frozen values) back into the slots of a tree.

    The inverse of `unbind_variables`. Each slot whose variable is given is
    replaced by it; slots with no matching variable stay slots.

    Args:
      tree: A pytree holding variable slots.
      variables: Variables or frozen values; each is matched to the slots equal
        to its `get_slot()`. Frozen values are inserted as they are (useful
        inside `jax.grad`), unless `unfreeze_as_copy` is set.
      allow_unused: If False, a variable whose slot is not in the tree is an
        error; if True it is ignored.
      unfreeze_as_copy: Insert new mutable copies (`value.unfreeze_as_copy()`)
        of the given frozen values; every item must then be a frozen value.

    Returns:
      A copy of `tree` with the variables in place of their slots.

    Example:
      >>> from saikei import sk
      >>> tree, params = sk.unbind_params({"w": sk.Parameter(label="w", value=1.0)})
      >>> sk.bind_variables(tree, params)["w"] is params[0]
      True
      >>> tree, frozen = sk.unbind_params(
      ...     {"w": sk.Parameter(label="w", value=1.0)}, freeze=True)
      >>> sk.bind_variables(tree, frozen)
      {'w': ParameterValue(label='w', value=Array(1., ...), metadata={})}
    """
    by_slot: dict[AbstractVariableSlot, Any] = {}
    for item in variables:
        cls = item.__class__
        if unfreeze_as_copy:
            if cls not in _VALUE_TYPES:
                raise TypeError(
                    f"bind_variables(..., unfreeze_as_copy=True) needs frozen values"
                    f" (ParameterValue, StateVariableValue, ...), but got {item!r}."
                    " Pass unfreeze_as_copy=False to insert variables as they are."
                )
            slot = item.get_slot()
            item = item.unfreeze_as_copy()
        elif cls in _VARIABLE_TYPES or cls in _VALUE_TYPES:
            slot = item.get_slot()
        else:
            raise TypeError(
                f"bind_variables expects variables or frozen variable values, but"
                f" got {item!r} of type {cls.__name__}."
            )
        if by_slot.setdefault(slot, item) is not item:
            raise VariableConflictError(
                f"Two variables were given for the slot {slot!r}: {by_slot[slot]!r}"
                f" and {item!r}. Pass one variable per label."
            )
    if not by_slot:
        return tree
    leaves, treedef = _tree_flatten(tree, is_leaf=_is_slot)
    slot_types = _SLOT_TYPES
    used: set[AbstractVariableSlot] = set()
    for index, leaf in enumerate(leaves):
        if leaf.__class__ in slot_types:
            item = by_slot.get(leaf)
            if item is not None:
                leaves[index] = item
                used.add(leaf)
    if not allow_unused and len(used) != len(by_slot):
        unused = [slot for slot in by_slot if slot not in used]
        raise ValueError(
            f"No slot in the tree matches these variables: {unused}. Check that"
            " the labels are right and that the tree is the one they were"
            " unbound from, or pass allow_unused=True to ignore them."
        )
    if not used:
        return tree
    return treedef.unflatten(leaves)


def freeze_variables(tree: Any, predicate: Callable[[AbstractVariable], bool] | None = None) -> Any:
    """Replaces the variables in a tree by their frozen values.

    A tree whose variables are all frozen is a plain pytree that can cross JAX
    transformations; frozen values also render with their labels.

    Args:
      tree: A pytree that may hold variables at its leaves.
      predicate: If given, only variables for which it returns True are frozen.

    Returns:
      A copy of `tree` with (selected) variables replaced by `var.freeze()`.

    Example:
      >>> from saikei import sk
      >>> sk.freeze_variables([sk.StateVariable(1, label="n"), 2])
      [StateVariableValue(label='n', value=Array(1, ...), metadata={}), 2]
    """
    leaves, treedef = _tree_flatten(tree)
    variable_types = _VARIABLE_TYPES
    frozen: dict[int, AbstractVariableValue] = {}
    replaced = False
    for index, leaf in enumerate(leaves):
        if leaf.__class__ in variable_types and (predicate is None or predicate(leaf)):
            # A shared variable is frozen once, so sharing survives as equal values.
            key = id(leaf)
            value = frozen.get(key)
            if value is None:
                value = frozen[key] = leaf.freeze()
            leaves[index] = value
            replaced = True
    if not replaced:
        return tree
    return treedef.unflatten(leaves)


def _typed_predicate(
    kind: type, predicate: Callable[[Any], bool] | None
) -> Callable[[AbstractVariable], bool]:
    if predicate is None:
        return lambda var: isinstance(var, kind)
    return lambda var: isinstance(var, kind) and predicate(var)


def unbind_params(
    tree: Any,
    predicate: Callable[[Parameter], bool] | None = None,
    freeze: bool = False,
) -> tuple[Any, tuple[Parameter | ParameterValue, ...]]:
    """`unbind_variables` restricted to `Parameter`s.

    Args:
      tree: A pytree that may hold variables.
      predicate: If given, only Parameters for which it returns True.
      freeze: Return `ParameterValue`s instead of the Parameters.

    Returns:
      `(tree_with_slots, parameters)`; StateVariables stay in the tree.

    Example:
      >>> from saikei import sk
      >>> model = [sk.Parameter(label="w", value=1.0), sk.StateVariable(0, label="n")]
      >>> tree, params = sk.unbind_params(model, freeze=True)
      >>> tree[0], [p.label for p in params]
      (ParameterSlot(label='w'), ['w'])
    """
    return unbind_variables(tree, _typed_predicate(Parameter, predicate), freeze)  # type: ignore[return-value]


def freeze_params(tree: Any, predicate: Callable[[Parameter], bool] | None = None) -> Any:
    """`freeze_variables` restricted to `Parameter`s.

    Example:
      >>> from saikei import sk
      >>> sk.freeze_params([sk.Parameter(label="w", value=1.0)])[0].label
      'w'
    """
    return freeze_variables(tree, _typed_predicate(Parameter, predicate))


def unbind_state_vars(
    tree: Any,
    predicate: Callable[[StateVariable], bool] | None = None,
    freeze: bool = False,
) -> tuple[Any, tuple[StateVariable | StateVariableValue, ...]]:
    """`unbind_variables` restricted to `StateVariable`s.

    Args:
      tree: A pytree that may hold variables.
      predicate: If given, only StateVariables for which it returns True.
      freeze: Return `StateVariableValue`s instead of the variables.

    Returns:
      `(tree_with_slots, state_variables)`; Parameters stay in the tree.

    Example:
      >>> from saikei import sk
      >>> model = [sk.Parameter(label="w", value=1.0), sk.StateVariable(0, label="n")]
      >>> tree, states = sk.unbind_state_vars(model)
      >>> tree[1], states[0].label
      (StateVariableSlot(label='n'), 'n')
    """
    return unbind_variables(tree, _typed_predicate(StateVariable, predicate), freeze)  # type: ignore[return-value]


def freeze_state_vars(tree: Any, predicate: Callable[[StateVariable], bool] | None = None) -> Any:
    """`freeze_variables` restricted to `StateVariable`s.

    Example:
      >>> from saikei import sk
      >>> frozen = sk.freeze_state_vars([sk.StateVariable(0, label="n")])
      >>> type(frozen[0]).__name__
      'StateVariableValue'
    """
    return freeze_variables(tree, _typed_predicate(StateVariable, predicate))
