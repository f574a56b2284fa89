"""The variable types: mutable labeled boxes, their frozen values and their slots.

A variable (`Parameter`, `StateVariable`) is an ordinary mutable Python object
that sits at a pytree leaf. It has two pure forms that JAX transformations can
carry: a frozen value (`ParameterValue`, `StateVariableValue`), a Struct whose
only child is the value, and a slot (`ParameterSlot`, `StateVariableSlot`), a
childless Struct that marks where a variable was taken out of a tree.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import itertools
import threading
import typing
from collections.abc import Hashable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import _viz_hooks
from saikei.core._auto_order import AutoOrderedAcrossTypes, _sort_key
from saikei.core._struct import Struct, pytree_dataclass

T = TypeVar("T")

VariableLabel = Hashable

_STATIC = {"pytree_node": False}

# Concrete classes, kept in sets so the hot loops of unbind/bind can recognize
# them with one set lookup on `type(x)` (an ABC `isinstance` costs ~10x more).
_VARIABLE_TYPES: set[type] = set()
_VALUE_TYPES: set[type] = set()
_SLOT_TYPES: set[type] = set()


class VariableConflictError(ValueError):
    """Raised when two distinct variables, or a variable and a slot, claim one slot.

    Example:
      >>> from saikei import sk
      >>> a = sk.Parameter(label="w", value=1.0)
      >>> b = sk.Parameter(label="w", value=2.0)
      >>> sk.unbind_variables([a, b])
      Traceback (most recent call last):
      ...
      saikei.core._variables_types.VariableConflictError: Two different variables ...
    """


class UnboundVariableError(Exception):
    """Raised when the `.value` of a variable slot is read.

    Example:
      >>> from saikei import sk
      >>> sk.ParameterSlot("w").value
      Traceback (most recent call last):
      ...
      saikei.core._variables_types.UnboundVariableError: Tried to read .value ...
    """


class _TraceState(threading.local):
    """How many `variable_jit` traces are running in this thread.

    Each variable remembers the depth at which it was created; reading or
    writing it at a deeper level means it was captured by a traced function
    instead of being passed in, which `variable_jit` cannot support.
    """

    depth = 0


_TRACE = _TraceState()


class _NotPassedIn:
    """Value of a `variable_jit` copy whose value was left out of the call.

    `variable_jit` leaves out the values of state it expects the function to
    overwrite before reading (fresh savers), so that the compiled function
    does not depend on them; reading such a copy raises `_NotPassedInRead`,
    and `variable_jit` then retraces with the value passed in.
    """

    __slots__ = ("was_read",)

    def __init__(self) -> None:
        self.was_read = False


class _NotPassedInRead(Exception):
    """Raised by reading a `_NotPassedIn` copy; `variable_jit` handles it."""


def _captured_variable_error(variable: LabeledVariable) -> RuntimeError:
    return RuntimeError(
        f"{type(variable).__name__} with label {variable.label!r} was used inside a"
        " function traced by sk.variable_jit, but it was not passed to that"
        " function as an argument: the function captured it from an enclosing"
        " scope (a closure, a global or a default argument). Its value would be"
        " compiled in as a constant and any update to it would be lost. Pass the"
        " variable, or the model that holds it, as an argument of the jitted"
        " function."
    )


# Leaves a variable value may hold without conversion. ShapeDtypeStructs stand
# in for arrays in abstract models (jax.eval_shape).
_KEEP_AS_IS = (jax.Array, jax.ShapeDtypeStruct)
_CONVERTIBLE = (np.ndarray, np.generic, bool, int, float, complex)


def _as_variable_value(value: Any, variable: Any) -> Any:
    """Converts numpy arrays and Python numbers in `value` to jax arrays."""
    leaves, treedef = jax.tree_util.tree_flatten(value)
    for leaf in leaves:
        if not isinstance(leaf, _KEEP_AS_IS):
            break
    else:
        return value
    converted = []
    for index, leaf in enumerate(leaves):
        if isinstance(leaf, _KEEP_AS_IS):
            converted.append(leaf)
        elif isinstance(leaf, _CONVERTIBLE):
            converted.append(jnp.asarray(leaf))
        else:
            path = jax.tree_util.tree_flatten_with_path(value)[0][index][0]
            where = f" at {jax.tree_util.keystr(path)}" if path else ""
            raise TypeError(
                f"Cannot store {leaf!r} (type {type(leaf).__name__}){where} in"
                f" {type(variable).__name__} {getattr(variable, 'label', '')!r}:"
                " variable values must be pytrees whose leaves are arrays (jax or"
                " numpy) or Python numbers. Keep other data in a static field of a"
                " Struct instead."
            )
    return treedef.unflatten(converted)


def _summarize(value: Any) -> str:
    """A one-line description of a variable value, for `repr`."""

    def leaf_text(leaf: Any) -> _Raw:
        if isinstance(leaf, jax.core.Tracer):
            return _Raw(repr(leaf))
        if isinstance(leaf, jax.Array):
            dtype = leaf.dtype
            if leaf.size <= 8 and not jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
                content = np.array2string(np.asarray(leaf), separator=", ")
                weak = ", weak_type=True" if leaf.weak_type else ""
                return _Raw(f"<jax.Array({content}, dtype={dtype}{weak})>")
            return _Raw(f"<jax.Array {dtype}{tuple(leaf.shape)}>")
        return _Raw(repr(leaf))

    return repr(jax.tree_util.tree_map(leaf_text, value))


class _Raw:
    def __init__(self, text: str):
        self.text = " ".join(text.split())

    def __repr__(self) -> str:
        return self.text


# Labels -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AutoStateVarLabel(AutoOrderedAcrossTypes):
    """The automatic label of a `StateVariable` created without one.

    It holds the `id` of the variable, so it is unique while the variable is
    alive but differs from run to run (and so defeats `jax.jit` caching when it
    ends up in a tree structure). Use `scoped_auto_state_var_labels` to get
    deterministic labels instead.

    Example:
      >>> from saikei import sk
      >>> var = sk.StateVariable(0)
      >>> var.label == sk.AutoStateVarLabel(var_id=id(var))
      True
    """

    var_id: int


@dataclasses.dataclass(frozen=True)
class ScopedStateVarLabel(AutoOrderedAcrossTypes):
    """The automatic label of a `StateVariable` created inside a label scope.

    Attributes:
      group: The group given to `scoped_auto_state_var_labels`.
      index: The position of the variable among those created in the scope.

    Example:
      >>> from saikei import sk
      >>> with sk.scoped_auto_state_var_labels(group="cache"):
      ...   sk.StateVariable(0).label
      ScopedStateVarLabel(group='cache', index=0)
    """

    group: Hashable
    index: int

    def _order_fields(self) -> tuple[Any, ...]:
        # Groups may be None in one label and a string in another.
        return (_sort_key(self.group), self.index)


class _LabelScopes(threading.local):
    def __init__(self) -> None:
        self.stack: list[tuple[Hashable, Iterator[int]]] = []


_LABEL_SCOPES = _LabelScopes()


@contextlib.contextmanager
def scoped_auto_state_var_labels(group: Hashable = None) -> Iterator[None]:
    """Gives deterministic automatic labels to StateVariables created inside.

    Outside this context a `StateVariable` built without a label gets an
    `AutoStateVarLabel` derived from its object id, which changes each time the
    model is rebuilt; since labels are part of the tree structure once
    variables are unbound, a `jax.jit` of the model would then recompile.
    Inside it, labels are `ScopedStateVarLabel(group, 0)`, `(group, 1)`, ... in
    creation order. Nested scopes count independently.

    Args:
      group: A hashable tag that is part of every label made in this scope;
        use different groups for scopes whose variables can meet in one tree.

    Returns:
      A context manager.

    Example:
      >>> from saikei import sk
      >>> with sk.scoped_auto_state_var_labels():
      ...   first, second = sk.StateVariable(0), sk.StateVariable(0)
      >>> first.label, second.label
      (ScopedStateVarLabel(group=None, index=0), ScopedStateVarLabel(group=None, index=1))
    """
    stack = _LABEL_SCOPES.stack
    stack.append((group, itertools.count()))
    try:
        yield
    finally:
        stack.pop()


def _automatic_label(variable: Any) -> VariableLabel:
    stack = _LABEL_SCOPES.stack
    if stack:
        group, counter = stack[-1]
        return ScopedStateVarLabel(group=group, index=next(counter))
    return AutoStateVarLabel(var_id=id(variable))


# Abstract interfaces -------------------------------------------------------------


class AbstractVariable(abc.ABC):
    """Base class of mutable variables that live at pytree leaves.

    A variable is not a pytree node: JAX sees it as an opaque leaf. To pass
    variables through JAX transformations, replace them by slots with
    `unbind_variables` and pass their frozen values instead.

    Subclasses implement `value`, `freeze`, `get_slot` and `update`.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _VARIABLE_TYPES.add(cls)

    @property
    @abc.abstractmethod
    def value(self) -> Any:
        """The current value, a pytree of arrays."""

    @abc.abstractmethod
    def freeze(self) -> AbstractVariableValue:
        """Returns an immutable snapshot of this variable."""

    @abc.abstractmethod
    def get_slot(self) -> AbstractVariableSlot:
        """Returns the slot that stands for this variable once it is unbound."""

    @abc.abstractmethod
    def update(self, new_frozen_value: AbstractVariableValue) -> None:
        """Sets this variable's value from a frozen value of the same slot."""

    # The mutable-state protocol that penzai's variables implement for JAX
    # ecosystem tools: the state as a pytree is the frozen value.
    @typing.final
    def __get_state_as_jax_pytree__(self) -> AbstractVariableValue:
        """State protocol: this variable's state as a pytree (same as `freeze()`).

        Example:
          >>> from saikei import sk
          >>> sk.Parameter(label="w", value=1.0).__get_state_as_jax_pytree__().value
          Array(1., dtype=float32, weak_type=True)
        """
        return self.freeze()

    @typing.final
    def __set_state_from_jax_pytree__(self, value: AbstractVariableValue) -> None:
        """State protocol: sets the state from a pytree (same as `update(value)`).

        Example:
          >>> from saikei import sk
          >>> w = sk.Parameter(label="w", value=1.0)
          >>> w.__set_state_from_jax_pytree__(sk.ParameterValue(label="w", value=2.0))
          >>> float(w.value)
          2.0
        """
        self.update(value)


class AbstractVariableValue(Struct):
    """Base class of frozen variable values: immutable pytrees.

    `get_slot()` must return the same slot as the variable the value was
    frozen from, and `unfreeze_as_copy()` builds a new mutable variable.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _VALUE_TYPES.add(cls)

    @abc.abstractmethod
    def unfreeze_as_copy(self) -> AbstractVariable:
        """Returns a new mutable variable holding this value."""

    @abc.abstractmethod
    def get_slot(self) -> AbstractVariableSlot:
        """Returns the slot of the variable this value belongs to."""

    @typing.final
    def __jax_pytree_state_to_new_variable__(self) -> AbstractVariable:
        """State protocol: a new variable holding this state (same as `unfreeze_as_copy()`).

        Example:
          >>> from saikei import sk
          >>> var = sk.StateVariableValue(label="n", value=0).__jax_pytree_state_to_new_variable__()
          >>> type(var).__name__, var.label
          ('StateVariable', 'n')
        """
        return self.unfreeze_as_copy()


class AbstractVariableSlot(Struct):
    """Base class of variable slots: childless, hashable placeholders.

    A slot marks where a variable was unbound from a tree; `bind_variables`
    puts a variable (or a frozen value) back in its place. Slots compare equal
    when they have the same type and label.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _SLOT_TYPES.add(cls)

    @property
    def value(self) -> Any:
        """Always raises `UnboundVariableError`: a slot holds no value."""
        raise UnboundVariableError(
            f"Tried to read .value of {self!r}: this tree still has unbound"
            " variable slots where variables should be. Bind variables into it"
            " first, e.g. `sk.bind_variables(tree, variables)` with the variables"
            " (or frozen values) returned by `sk.unbind_variables`, or build the"
            " model with an init rng instead of None."
        )


# Labeled variables -------------------------------------------------------------


class LabeledVariable(AbstractVariable, Generic[T]):
    """A variable identified by a label, with a value and a metadata dict.

    Assigning `.value` converts numpy arrays and Python numbers at the leaves
    to jax arrays; the pytree structure (lists, dicts, None, Structs) is kept.

    Attributes:
      label: The label that identifies this variable in any tree it is in.
      metadata: A dict of user information (e.g. `{"trainable": False}`).
    """

    __slots__ = ("__weakref__", "_slot", "_trace_depth", "_value", "label", "metadata")

    label: VariableLabel
    metadata: dict[Any, Any]
    _color: ClassVar[str] = "#cccccc"

    def __init__(
        self, *, label: VariableLabel, value: T, metadata: dict[Any, Any] | None = None
    ) -> None:
        """Builds a variable.

        Args:
          label: The unique label of the variable.
          value: Its initial value, a pytree of arrays.
          metadata: Optional dict of user information.
        """
        self.label = label
        self.metadata = {} if metadata is None else metadata
        self._slot = None
        self._trace_depth = _TRACE.depth
        self._value = _as_variable_value(value, self)

    @classmethod
    def _rebuild(cls, label: VariableLabel, value: Any, metadata: dict[Any, Any]) -> Any:
        """Makes a variable of this class without running `__init__`.

        Only valid for classes whose state is exactly label, metadata and value
        (Parameter, StateVariable); used by `variable_jit` for its inner copies.
        """
        variable = cls.__new__(cls)
        variable.label = label
        variable.metadata = metadata
        variable._slot = None
        variable._trace_depth = _TRACE.depth
        variable._value = _as_variable_value(value, variable)
        return variable

    @property
    def value(self) -> T:
        """The current value (assigning converts leaves to jax arrays)."""
        if _TRACE.depth > self._trace_depth:
            raise _captured_variable_error(self)
        value = self._value
        if value.__class__ is _NotPassedIn:
            value.was_read = True
            raise _NotPassedInRead(self.label)
        return value

    @value.setter
    def value(self, new_value: T) -> None:
        if _TRACE.depth > self._trace_depth:
            raise _captured_variable_error(self)
        self._value = _as_variable_value(new_value, self)

    def set_value(self, new_value: T) -> None:
        """Sets `.value`; handy inside lambdas."""
        self.value = new_value

    def update(self, new_frozen_value: AbstractVariableValue) -> None:
        """Sets the value from a frozen value of this same variable.

        Args:
          new_frozen_value: A frozen value whose slot equals `self.get_slot()`.

        Example:
          >>> from saikei import sk
          >>> counter = sk.StateVariable(0, label="n")
          >>> counter.update(sk.StateVariableValue(label="n", value=5))
          >>> int(counter.value)
          5
        """
        if new_frozen_value.get_slot() != self.get_slot():
            raise ValueError(
                f"Cannot update {type(self).__name__} {self.label!r} from"
                f" {type(new_frozen_value).__name__} with slot"
                f" {new_frozen_value.get_slot()!r}: it belongs to a different"
                f" variable (expected slot {self.get_slot()!r})."
            )
        self.value = new_frozen_value.value  # type: ignore[attr-defined]

    def treescope_color(self) -> str:
        """The CSS color treescope uses for this kind of variable."""
        return self._color

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(label={self.label!r},"
            f" value={_summarize(self._value)}, metadata={self.metadata!r})"
        )

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        # the viz layer registers the renderer (core never imports it).
        return _viz_hooks.render("variable", self, path, subtree_renderer)


class Parameter(LabeledVariable[T]):
    """A model weight: a variable that optimizers update and the model only reads.

    Args:
      label: The unique label of the parameter (usually its path-like name).
      value: The initial value, a pytree of arrays.
      metadata: Optional dict of user information.

    Example:
      >>> from saikei import sk
      >>> weight = sk.Parameter(label="linear/w", value=[1.0, 2.0])
      >>> weight.value[1]
      Array(2., dtype=float32, weak_type=True)
      >>> weight.freeze()
      ParameterValue(label='linear/w', value=[Array(1., ...), Array(2., ...)], metadata={})
    """

    __slots__ = ()
    _color = "#b2d9f5"

    def freeze(self) -> ParameterValue[T]:
        """Returns a `ParameterValue` snapshot of this parameter."""
        return ParameterValue(label=self.label, value=self.value, metadata=dict(self.metadata))

    def get_slot(self) -> ParameterSlot:
        """Returns `ParameterSlot(label)`."""
        slot = self._slot
        # One slot object per variable makes the dict lookups of unbind/bind
        # hit on identity; it is rebuilt if the label was reassigned.
        if slot is None or slot.label is not self.label:
            slot = self._slot = ParameterSlot(self.label)
        return slot


class StateVariable(LabeledVariable[T]):
    """A variable the model itself updates while it runs (caches, counters, ...).

    Args:
      value: The initial value, a pytree of arrays.
      label: The unique label; when None an automatic label is made (see
        `scoped_auto_state_var_labels`).
      metadata: Optional dict of user information.

    Example:
      >>> from saikei import sk
      >>> calls = sk.StateVariable(0, label="calls")
      >>> calls.value = calls.value + 1
      >>> calls
      StateVariable(label='calls', value=<jax.Array(1, dtype=int32, weak_type=True)>, metadata={})
    """

    __slots__ = ()
    _color = "#ffc985"

    def __init__(
        self,
        value: T,
        *,
        label: VariableLabel | None = None,
        metadata: dict[Any, Any] | None = None,
    ) -> None:
        super().__init__(
            label=_automatic_label(self) if label is None else label,
            value=value,
            metadata=metadata,
        )

    def freeze(self) -> StateVariableValue[T]:
        """Returns a `StateVariableValue` snapshot of this variable."""
        return StateVariableValue(label=self.label, value=self.value, metadata=dict(self.metadata))

    def get_slot(self) -> StateVariableSlot:
        """Returns `StateVariableSlot(label)`."""
        slot = self._slot
        if slot is None or slot.label is not self.label:
            slot = self._slot = StateVariableSlot(self.label)
        return slot


# Frozen values and slots -----------------------------------------------------------


class LabeledVariableValue(AbstractVariableValue, Generic[T]):
    """Base class of the frozen values of labeled variables (`ParameterValue`, `StateVariableValue`).

    Subclasses have the fields `label`, `value` and `metadata`; this base
    exists so that `isinstance(v, LabeledVariableValue)` works as in penzai.

    Example:
      >>> from saikei import sk
      >>> from saikei.core import LabeledVariableValue
      >>> isinstance(sk.ParameterValue(label="w", value=1.0), LabeledVariableValue)
      True
    """


@pytree_dataclass
class ParameterValue(LabeledVariableValue[T]):
    """The frozen value of a `Parameter`: a pytree whose only child is `value`.

    Attributes:
      label: The parameter's label (static).
      value: The snapshot of the value (the pytree child).
      metadata: The parameter's metadata (static).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> frozen = sk.ParameterValue(label="w", value=2.0)
      >>> jax.tree_util.tree_leaves(frozen)
      [2.0]
      >>> frozen.unfreeze_as_copy()
      Parameter(label='w', value=<jax.Array(2., dtype=float32, weak_type=True)>, metadata={})
    """

    label: VariableLabel = dataclasses.field(metadata=_STATIC)
    value: T
    metadata: dict[Any, Any] = dataclasses.field(default_factory=dict, metadata=_STATIC)

    def unfreeze_as_copy(self) -> Parameter[T]:
        """Returns a new `Parameter` holding this value."""
        return Parameter(label=self.label, value=self.value, metadata=dict(self.metadata))

    def get_slot(self) -> ParameterSlot:
        """Returns `ParameterSlot(label)`."""
        return ParameterSlot(self.label)

    def treescope_color(self) -> str:
        """The CSS color treescope uses for frozen parameters."""
        return "#cdd9e5"


@pytree_dataclass
class StateVariableValue(LabeledVariableValue[T]):
    """The frozen value of a `StateVariable`: a pytree whose only child is `value`.

    Attributes:
      label: The variable's label (static).
      value: The snapshot of the value (the pytree child).
      metadata: The variable's metadata (static).

    Example:
      >>> from saikei import sk
      >>> sk.StateVariable(3, label="n").freeze()
      StateVariableValue(label='n', value=Array(3, dtype=int32, weak_type=True), metadata={})
    """

    label: VariableLabel = dataclasses.field(metadata=_STATIC)
    value: T
    metadata: dict[Any, Any] = dataclasses.field(default_factory=dict, metadata=_STATIC)

    def unfreeze_as_copy(self) -> StateVariable[T]:
        """Returns a new `StateVariable` holding this value."""
        return StateVariable(value=self.value, label=self.label, metadata=dict(self.metadata))

    def get_slot(self) -> StateVariableSlot:
        """Returns `StateVariableSlot(label)`."""
        return StateVariableSlot(self.label)

    def treescope_color(self) -> str:
        """The CSS color treescope uses for frozen state."""
        return "#f2dc9b"


@pytree_dataclass
class ParameterSlot(AbstractVariableSlot):
    """Marks where a `Parameter` with this label was unbound.

    Example:
      >>> from saikei import sk
      >>> tree, params = sk.unbind_params({"w": sk.Parameter(label="w", value=1.0)})
      >>> tree
      {'w': ParameterSlot(label='w')}
    """

    label: VariableLabel = dataclasses.field(metadata=_STATIC)

    def treescope_color(self) -> tuple[str, str]:
        """Border and fill colors treescope uses for parameter slots."""
        return ("#b2d9f5", "#e0e0e0")


@pytree_dataclass
class StateVariableSlot(AbstractVariableSlot):
    """Marks where a `StateVariable` with this label was unbound.

    Example:
      >>> from saikei import sk
      >>> sk.StateVariable(0, label="n").get_slot()
      StateVariableSlot(label='n')
    """

    label: VariableLabel = dataclasses.field(metadata=_STATIC)

    def treescope_color(self) -> tuple[str, str]:
        """Border and fill colors treescope uses for state slots."""
        return ("#ffc985", "#e0e0e0")
