"""`variable_jit`: `jax.jit` for functions that take and update variables."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import jax

from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._variables_binding import bind_variables, unbind_variables
from saikei.core._variables_types import (
    _TRACE,
    _VARIABLE_TYPES,
    AbstractVariable,
    Parameter,
    StateVariable,
    _NotPassedIn,
    _NotPassedInRead,
)

F = TypeVar("F", bound=Callable[..., Any])

# Names of the hidden keyword arguments of the traced function. Donated
# variables travel apart from the others so that only they are donated.
_KEPT = "__saikei_variables"
_DONATED = "__saikei_donated_variables"

# Variables of these exact classes cross the jit boundary as their raw value
# (their class, label and metadata go in the static part); any other variable
# type crosses as its frozen value.
_RAW_TYPES = (Parameter, StateVariable)

_tree_flatten = jax.tree_util.tree_flatten


@pytree_dataclass
class _Payloads(Struct):
    """What crosses the jit boundary for a group of variables.

    `specs[i]` is `(class, label, metadata)` when `payloads[i]` is a raw value,
    or None when it is a frozen value.
    """

    payloads: tuple[Any, ...]
    specs: tuple[Any, ...] = dataclasses.field(metadata={"pytree_node": False})


class _LeftOut:
    """Which StateVariables a `variable_jit` function receives without their value.

    A fresh saver holds None until the function first assigns it an array;
    passing that None in, then the array on the next call, would trace the
    function twice. So a StateVariable whose value is None, or which an earlier
    trace overwrote before reading, is passed without its value (its copy
    holds a `_NotPassedIn` marker). A trace that reads such a copy before
    assigning it is abandoned and redone with the value passed in, so the
    compiled function never depends on a value it did not receive.
    """

    __slots__ = ("must_pass", "overwritten")

    def __init__(self) -> None:
        self.overwritten: set[Any] = set()  # labels assigned before being read
        self.must_pass: set[Any] = set()  # labels read before being assigned

    def leaves_out(self, var: AbstractVariable) -> bool:
        if var.__class__ is not StateVariable:
            return False
        value = var._value  # type: ignore[attr-defined]
        if value.__class__ is _NotPassedIn:
            return True  # a left-out copy handed on to a nested variable_jit
        label = var.label  # type: ignore[attr-defined]
        if label in self.must_pass:
            return False
        return value is None or label in self.overwritten


def _export(variables: list[AbstractVariable], left_out: _LeftOut) -> _Payloads:
    payloads = []
    specs = []
    for var in variables:
        if left_out.leaves_out(var):
            # The fourth entry marks a value left out (the payload is None).
            specs.append((var.__class__, var.label, dict(var.metadata), True))  # type: ignore[attr-defined]
            payloads.append(None)
        elif var.__class__ in _RAW_TYPES:
            # A copy of the metadata, so that editing it later forces a retrace
            # instead of silently changing the cached key.
            specs.append((var.__class__, var.label, dict(var.metadata)))  # type: ignore[attr-defined]
            payloads.append(var.value)
        else:
            specs.append(None)
            payloads.append(var.freeze())
    return _Payloads(payloads=tuple(payloads), specs=tuple(specs))


def _rebuild(spec: Any, payload: Any) -> AbstractVariable:
    if spec is None:
        return payload.unfreeze_as_copy()
    if len(spec) == 4:
        cls, label, metadata, _ = spec
        copy = cls._rebuild(label, None, dict(metadata))
        copy._value = _NotPassedIn()
        return copy
    cls, label, metadata = spec
    return cls._rebuild(label, payload, dict(metadata))


def _current_payload(spec: Any, variable: Any) -> Any:
    return variable.freeze() if spec is None else variable.value


def _is_left_out(spec: Any) -> bool:
    return spec is not None and len(spec) == 4


def _replaced(before: Any, after: Any) -> bool:
    """Whether tracing assigned a new value (new tracers or a new structure)."""
    old_leaves, old_def = _tree_flatten(before)
    new_leaves, new_def = _tree_flatten(after)
    if old_def != new_def:
        return True
    return any(old is not new for old, new in zip(old_leaves, new_leaves))


def _traced_signature(fun: Callable[..., Any]) -> inspect.Signature:
    """`fun`'s signature plus the two hidden keyword-only parameters.

    `jax.jit` reads it to map `static_argnames`/`donate_argnames` to positions.
    """
    hidden = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in (_KEPT, _DONATED)]
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        params = [
            inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
        ]
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        return inspect.Signature([*params[:-1], *hidden, params[-1]])
    return inspect.Signature([*params, *hidden])


def _call_with_copies(
    fun: Callable[..., Any],
    rebuild_arguments: Callable[[list[AbstractVariable]], tuple[tuple[Any, ...], dict[str, Any]]],
    kept: _Payloads,
    donated: _Payloads,
) -> tuple[Any, dict[int, Any]]:
    """The traced body: runs `fun` on fresh variables and collects new values."""
    specs = kept.specs + donated.specs
    inputs = kept.payloads + donated.payloads
    depth = _TRACE.depth + 1
    _TRACE.depth = depth
    try:
        # Copies made at this depth are the only variables the function may
        # touch; older ones were captured rather than passed in.
        copies = [_rebuild(spec, payload) for spec, payload in zip(specs, inputs)]
        markers = [copy._value for spec, copy in zip(specs, copies) if _is_left_out(spec)]  # type: ignore[attr-defined]
        args, kwargs = rebuild_arguments(copies)
        result = fun(*args, **kwargs)
        returned = [
            leaf for leaf in jax.tree_util.tree_leaves(result) if leaf.__class__ in _VARIABLE_TYPES
        ]
        if returned:
            raise ValueError(
                "A function compiled with sk.variable_jit returned variables:"
                f" {[getattr(v, 'label', v) for v in returned]}. Variables"
                " cannot leave a jitted function. Return their frozen values"
                " instead (`sk.unbind_variables(tree, freeze=True)`) and"
                " rebuild variables outside with"
                " `sk.bind_variables(..., unfreeze_as_copy=True)`."
            )
        # Only values the function replaced leave the computation, keyed by
        # position (the keys are static, so the caller knows which is which);
        # a weight that was only read is not copied out. Donated values always
        # come back, since their input buffers are consumed.
        if any(marker.was_read for marker in markers):
            # Even if the function caught the error, its trace used no value.
            raise _NotPassedInRead()
        first_donated = len(kept.payloads)
        updates = {}
        for index, (spec, before, copy) in enumerate(zip(specs, inputs, copies)):
            if _is_left_out(spec):
                if copy._value.__class__ is not _NotPassedIn:  # type: ignore[attr-defined]
                    updates[index] = copy._value  # type: ignore[attr-defined]
                continue
            after = _current_payload(spec, copy)
            if index >= first_donated or _replaced(before, after):
                updates[index] = after
    finally:
        _TRACE.depth = depth - 1
    return result, updates


def _name_like(traced: Callable[..., Any], fun: Callable[..., Any]) -> None:
    traced.__name__ = getattr(fun, "__name__", "variable_jit_function")
    traced.__qualname__ = getattr(fun, "__qualname__", traced.__name__)


def _collect_variables(leaves: list[Any]) -> tuple[list[AbstractVariable], list[int]] | None:
    """Finds the variables among flattened leaves and blanks them out.

    Returns the distinct variables in order of appearance and, for each
    variable leaf in order, the index of its variable; or None if two distinct
    variables share a slot (the caller then reports the conflict).
    """
    variable_types = _VARIABLE_TYPES
    variables: list[AbstractVariable] = []
    index_of: dict[Any, int] = {}
    positions: list[int] = []
    for i, leaf in enumerate(leaves):
        if leaf.__class__ in variable_types:
            slot = leaf.get_slot()
            k = index_of.get(slot)
            if k is None:
                k = index_of[slot] = len(variables)
                variables.append(leaf)
            elif variables[k] is not leaf:
                return None
            positions.append(k)
            # None is never a pytree leaf, so it marks the variable positions.
            leaves[i] = None
    return variables, positions


def _split_for_donation(
    variables: list[AbstractVariable], positions: list[int]
) -> tuple[list[AbstractVariable], list[AbstractVariable], list[int]]:
    """Orders variables as (parameters, donated state) and renumbers positions."""
    kept = [i for i, var in enumerate(variables) if isinstance(var, Parameter)]
    donated = [i for i, var in enumerate(variables) if not isinstance(var, Parameter)]
    renumber = {old: new for new, old in enumerate(kept + donated)}
    return (
        [variables[i] for i in kept],
        [variables[i] for i in donated],
        [renumber[k] for k in positions],
    )


def _pass_left_out_next_time(
    left_out: _LeftOut, variables: list[AbstractVariable], kept: _Payloads, donated: _Payloads
) -> None:
    """After a trace read a value that was left out: pass those values in."""
    specs = kept.specs + donated.specs
    dropped = [var for var, spec in zip(variables, specs) if _is_left_out(spec)]
    if not dropped or any(var._value.__class__ is _NotPassedIn for var in dropped):  # type: ignore[attr-defined]
        # Nothing of ours was left out, or the value is missing one level up
        # (a nested variable_jit): the enclosing call must retrace.
        raise _NotPassedInRead()
    left_out.must_pass.update(var.label for var in dropped)  # type: ignore[attr-defined]
    left_out.overwritten.difference_update(left_out.must_pass)


def _note_overwritten(
    left_out: _LeftOut,
    variables: list[AbstractVariable],
    kept: _Payloads,
    donated: _Payloads,
    updates: dict[int, Any],
) -> None:
    """Remembers left-out variables the function assigned, to leave them out again."""
    specs = kept.specs + donated.specs
    for index in updates:
        if _is_left_out(specs[index]):
            left_out.overwritten.add(variables[index].label)  # type: ignore[attr-defined]


def _write_back(variables: list[AbstractVariable], updates: dict[int, Any]) -> None:
    for index, payload in updates.items():
        var = variables[index]
        if var.__class__ in _RAW_TYPES:
            # Outputs of the computation are jax arrays already.
            var._value = payload  # type: ignore[attr-defined]
        else:
            var.update(payload)


# jit options that name arguments of `fun`; with any of them the arguments must
# reach jax.jit in their original positions.
_ARGUMENT_OPTIONS = frozenset(
    {"static_argnums", "static_argnames", "donate_argnums", "donate_argnames", "in_shardings"}
)


def variable_jit(fun: F, *, donate_variables: bool = False, **jit_kwargs: Any) -> F:
    """Compiles `fun` with `jax.jit`, letting it take and update variables.

    Variables (Parameters, StateVariables) may appear anywhere in the
    arguments, e.g. inside a model. They are unbound before the call and their
    values passed to the compiled function; inside, `fun` sees fresh variables
    with the same labels and may read and assign them. Values assigned inside
    are written back into the caller's variables when the call returns. Only
    assigned values leave the computation, so weights that are only read are
    not copied out on every call. The compiled function is reused while the
    argument structure and the variable labels stay the same.

    Limitations: variables must be passed as arguments, not captured by `fun`
    from an enclosing scope (touching a captured variable raises an error),
    and `fun` must not return variables.

    Args:
      fun: The function to compile.
      donate_variables: Donate the buffers of the variables that are not
        Parameters (the state) to the computation, so that updated state can
        reuse them. Parameters are never donated.
      **jit_kwargs: Passed to `jax.jit` (e.g. `static_argnames`). Donate keyword
        arguments with `donate_argnames`.

    Returns:
      The compiled function, with `fun`'s signature.

    Example:
      >>> from saikei import sk
      >>> @sk.variable_jit
      ... def count_and_scale(x, counter, scale):
      ...   counter.value = counter.value + 1
      ...   return x * scale.value
      >>> counter = sk.StateVariable(0, label="n")
      >>> scale = sk.Parameter(label="s", value=2.0)
      >>> float(count_and_scale(3.0, counter, scale)), int(counter.value)
      (6.0, 1)
    """
    if _ARGUMENT_OPTIONS.isdisjoint(jit_kwargs):
        return _flat_variable_jit(fun, donate_variables, jit_kwargs)
    return _keyword_variable_jit(fun, donate_variables, jit_kwargs)


def _flat_variable_jit(fun: F, donate_variables: bool, jit_kwargs: dict[str, Any]) -> F:
    """variable_jit when no jit option refers to `fun`'s arguments.

    The arguments are flattened once here; the compiled function receives the
    leaves (variables blanked out) and, as a static argument, the structure
    needed to rebuild them. This saves flattening the argument Structs twice
    and the slots altogether.
    """

    def traced(
        layout: tuple[Any, tuple[int, ...]], leaves: list[Any], kept: _Payloads, donated: _Payloads
    ) -> tuple[Any, dict[int, Any]]:
        treedef, positions = layout

        def rebuild_arguments(copies: list[AbstractVariable]) -> Any:
            next_position = iter(positions).__next__
            return treedef.unflatten(
                [copies[next_position()] if leaf is None else leaf for leaf in leaves]
            )

        return _call_with_copies(fun, rebuild_arguments, kept, donated)

    _name_like(traced, fun)
    if donate_variables:
        jit_kwargs = {**jit_kwargs, "donate_argnums": (3,)}
    jitted = jax.jit(traced, static_argnums=(0,), **jit_kwargs)
    no_variables = _Payloads(payloads=(), specs=())
    left_out = _LeftOut()

    @functools.wraps(fun)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        leaves, treedef = _tree_flatten((args, kwargs))
        collected = _collect_variables(leaves)
        if collected is None:
            unbind_variables((args, kwargs))  # raises VariableConflictError with paths
            raise AssertionError("unreachable: unbind_variables found no conflict")
        variables, positions = collected
        if donate_variables:
            kept_vars, donated_vars, positions = _split_for_donation(variables, positions)
            variables = kept_vars + donated_vars
        layout = (treedef, tuple(positions))
        while True:
            if donate_variables:
                kept, donated = _export(kept_vars, left_out), _export(donated_vars, left_out)
            else:
                kept, donated = _export(variables, left_out), no_variables
            try:
                result, updates = jitted(layout, leaves, kept, donated)
                break
            except _NotPassedInRead:
                _pass_left_out_next_time(left_out, variables, kept, donated)
        _note_overwritten(left_out, variables, kept, donated, updates)
        _write_back(variables, updates)
        return result

    return wrapper  # type: ignore[return-value]


def _keyword_variable_jit(fun: F, donate_variables: bool, jit_kwargs: dict[str, Any]) -> F:
    """variable_jit when jit options refer to `fun`'s arguments by position or name.

    The arguments keep their places (with slots in place of variables) and the
    variables travel in two hidden keyword arguments.
    """

    def traced(*args: Any, **kwargs: Any) -> tuple[Any, dict[int, Any]]:
        kept = kwargs.pop(_KEPT)
        donated = kwargs.pop(_DONATED)
        return _call_with_copies(
            fun, lambda copies: bind_variables((args, kwargs), copies), kept, donated
        )

    _name_like(traced, fun)
    traced.__signature__ = _traced_signature(fun)  # type: ignore[attr-defined]
    if donate_variables:
        names = jit_kwargs.get("donate_argnames", ())
        names = (names,) if isinstance(names, str) else tuple(names)
        jit_kwargs = {**jit_kwargs, "donate_argnames": (*names, _DONATED)}
    jitted = jax.jit(traced, **jit_kwargs)
    no_variables = _Payloads(payloads=(), specs=())
    left_out = _LeftOut()

    @functools.wraps(fun)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _KEPT in kwargs or _DONATED in kwargs:
            raise TypeError(f"{_KEPT!r} and {_DONATED!r} are reserved by sk.variable_jit.")
        (args, kwargs), variables = unbind_variables((args, kwargs))
        variables = list(variables)
        if donate_variables:
            kept_vars, donated_vars, _ = _split_for_donation(variables, [])
            variables = kept_vars + donated_vars
        while True:
            if donate_variables:
                kept = kwargs[_KEPT] = _export(kept_vars, left_out)
                donated = kwargs[_DONATED] = _export(donated_vars, left_out)
            else:
                kept = kwargs[_KEPT] = _export(variables, left_out)
                donated = kwargs[_DONATED] = no_variables
            try:
                result, updates = jitted(*args, **kwargs)
                break
            except _NotPassedInRead:
                _pass_left_out_next_time(left_out, variables, kept, donated)
        _note_overwritten(left_out, variables, kept, donated, updates)
        _write_back(variables, updates)
        return result

    return wrapper  # type: ignore[return-value]


# Variables handed to JAX transformations -----------------------------------------


class VariableInTransformError(ValueError):
    """A bound variable reached `jax.grad`, `jax.jit`, `jax.vmap`, ... as an argument."""


def _variable_in_transform(variable: Any) -> Any:
    kind = type(variable).__name__
    label = getattr(variable, "label", None)
    if isinstance(variable, Parameter):
        how = (
            "To differentiate with respect to the weights, unbind them and pass their frozen"
            " values:\n"
            "    unbound, params = sk.unbind_params(model, freeze=True)\n"
            "    def loss(params, x): return f(sk.bind_variables(unbound, params), x)\n"
            "    grads = jax.grad(loss)(params, x)\n"
            "To treat them as constants, pass `sk.freeze_params(model)` instead of `model`;"
            " to compile a function that takes the model as it is, use `sk.variable_jit`."
        )
    else:
        how = (
            "Pass `sk.freeze_variables(model)` (read-only values), or unbind them with"
            " `sk.unbind_variables(model, freeze=True)` and rebind inside the function with"
            " `sk.bind_variables(..., unfreeze_as_copy=True)`; `sk.variable_jit` does this"
            " for you and writes the new values back."
        )
    raise VariableInTransformError(
        f"{kind} {label!r} was passed to a JAX transformation (jax.grad, jax.jit, jax.vmap,"
        f" ...) while bound inside the arguments; JAX accepts only arrays at the leaves, and"
        f" a {kind} is a mutable box. {how}"
    )


def _register_transform_errors() -> None:
    """Makes JAX report bound variables with `VariableInTransformError`.

    JAX looks up leaf types in these two tables (by class and its bases)
    before it gives up with a generic TypeError; they are private, so a JAX
    version without them keeps its own error.
    """
    try:
        from jax._src import core as jax_core
        from jax._src import dtypes as jax_dtypes
    except ImportError:  # pragma: no cover - depends on JAX internals
        return
    mappings = getattr(jax_core, "pytype_aval_mappings", None)
    if isinstance(mappings, dict):
        mappings[AbstractVariable] = _variable_in_transform
    register = getattr(jax_dtypes, "register_canonicalize_value_handler", None)
    if register is not None:
        register(AbstractVariable, _variable_in_transform)


_register_transform_errors()
