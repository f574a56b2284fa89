"""Turn a `flax.linen` module call into a patchable saikei layer tree.

`unflaxify_apply` runs a Flax module once, recording every submodule method
call, and returns an `InterceptedFlaxModuleMethod`: a saikei layer holding one
child layer per recorded submodule call (in call order) and the Flax variables
as saikei variables: the "params" collection as `Parameter`s labelled by the
Flax path (`"Dense_0.kernel"`), mutable collections such as "batch_stats" as
`StateVariable`s labelled `FlaxVarLabel(collection, name)`, and other
collections as plain arrays. Calling it runs the Flax code again, but each
submodule call is dispatched to the corresponding child layer, so children can
be replaced or wrapped with saikei selectors (e.g. to save or patch
intermediate values). Randomness (e.g. dropout) comes from a `random_streams`
side input, `{rng_name: sk.RandomStream}`, as in penzai.

Limitations: only the root layer can be called on its own (children run inside
their parent's Flax call); Flax transforms (`nn.scan`, `nn.vmap`, ...) are not
supported; variables that a mutable collection creates during the call (e.g.
`sow`) are not kept. Intended for exploring and migrating Flax models.

Example:
  >>> import flax.linen as fnn
  >>> import jax, jax.numpy as jnp
  >>> from saikei.toolshed import unflaxify
  >>> module = fnn.Dense(3)
  >>> variables = module.init(jax.random.key(0), jnp.ones((1, 2)))
  >>> layer = unflaxify.unflaxify_apply(module, variables, jnp.ones((1, 2)))
  >>> out = layer(unflaxify.ArgsAndKwargs.capture(jnp.ones((1, 2))))
  >>> bool(jnp.allclose(out, module.apply(variables, jnp.ones((1, 2)))))
  True
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import flax.linen as fnn
import jax
from flax.core.scope import in_filter
from flax.errors import InvalidRngError

from saikei.core._auto_order import AutoOrderedAcrossTypes
from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._variables_types import (
    AbstractVariableSlot,
    AbstractVariableValue,
    LabeledVariable,
    Parameter,
    StateVariable,
    StateVariableValue,
    UnboundVariableError,
)
from saikei.nn._layer import Layer

__all__ = ["ArgsAndKwargs", "FlaxVarLabel", "InterceptedFlaxModuleMethod", "unflaxify_apply"]


@dataclasses.dataclass(frozen=True)
class FlaxVarLabel(AutoOrderedAcrossTypes):
    """The label of a `StateVariable` made from a mutable Flax collection.

    Attributes:
      collection: The Flax collection, e.g. "batch_stats".
      name: The variable's Flax path joined with dots, e.g. "BatchNorm_0.mean".

    Example:
      >>> from saikei.toolshed import unflaxify
      >>> unflaxify.FlaxVarLabel("batch_stats", "BatchNorm_0.mean")
      FlaxVarLabel(collection='batch_stats', name='BatchNorm_0.mean')
    """

    collection: Any
    name: str

    def _order_fields(self) -> tuple[Any, ...]:
        return (str(self.collection), self.name)


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


@pytree_dataclass
class ArgsAndKwargs(Struct):
    """The positional and keyword arguments of a Flax method call, as one layer input.

    Attributes:
      args: Positional arguments.
      kwargs: Keyword arguments.

    Example:
      >>> from saikei.toolshed import unflaxify
      >>> unflaxify.ArgsAndKwargs.capture(1, 2, train=False).kwargs
      {'train': False}
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @classmethod
    def capture(cls, *args: Any, **kwargs: Any) -> ArgsAndKwargs:
        """Builds an `ArgsAndKwargs` from the arguments it is called with.

        Example:
          >>> from saikei.toolshed import unflaxify
          >>> unflaxify.ArgsAndKwargs.capture(1, 2).args
          (1, 2)
        """
        return cls(args=tuple(args), kwargs=dict(kwargs))


class _Frame:
    __slots__ = ("counts", "layer", "path", "side_inputs")

    def __init__(self, layer: Any, path: tuple[str, ...], side_inputs: dict[str, Any]):
        self.layer = layer
        self.path = path
        self.counts: dict[str, int] = {}
        self.side_inputs = side_inputs


class _Run:
    """One root layer's Flax call: the stack of layers running and the call to dispatch."""

    __slots__ = ("frames", "pending")

    def __init__(self) -> None:
        self.frames: list[_Frame] = []
        self.pending: tuple[tuple[str, ...], str, Callable[..., Any]] | None = None


class _Current(threading.local):
    """The root call in progress on this thread (None outside any root call)."""

    def __init__(self) -> None:
        self.run: _Run | None = None


_CURRENT = _Current()


def _scope_path(module: fnn.Module) -> tuple[str, ...] | None:
    scope = getattr(module, "scope", None)
    return None if scope is None else tuple(scope.path)


def _call_key(rel: tuple[str, ...], method: str, counts: dict[str, int]) -> str:
    base = "/".join(rel) + ("" if method == "__call__" else f".{method}")
    n = counts.get(base, 0) + 1
    counts[base] = n
    return base if n == 1 else f"{base}#{n}"


def _collect_flax_variables(
    root: InterceptedFlaxModuleMethod,
) -> tuple[dict[str, Any], list[str], list[tuple[str, tuple[str, ...], Any]]]:
    """The Flax variables a root call runs with, whatever state the saikei values are in.

    Walks the root and the child layers it dispatches to (not other roots
    nested in patches), and reads each value from a live variable, a frozen
    value (after `sk.freeze_params` or inside `stateless_call`) or a plain
    array. Returns `(flax_variables, mutable_collections, live_state)` where
    `live_state` lists the StateVariables to write Flax's updates back into.
    """
    flax_vars: dict[str, Any] = {}
    mutable: list[str] = []
    live_state: list[tuple[str, tuple[str, ...], Any]] = []

    def visit(node: InterceptedFlaxModuleMethod) -> None:
        for col, entries in node.variables.items():
            for rel_name, entry in entries.items():
                path = (*node.scope_path, *rel_name.split("/"))
                if isinstance(entry, AbstractVariableSlot):
                    raise UnboundVariableError(
                        f"unflaxify: the Flax variable {col}/{'/'.join(path)} is the unbound slot"
                        f" {entry!r}; bind a value with `sk.bind_variables` (or call"
                        " `stateless_call` with its value) before running the layer."
                    )
                if isinstance(entry, LabeledVariable | AbstractVariableValue):
                    value = entry.value
                else:
                    value = entry
                if isinstance(entry, StateVariable | StateVariableValue) and col not in mutable:
                    mutable.append(col)
                if isinstance(entry, StateVariable):
                    live_state.append((col, path, entry))
                node_dict = flax_vars.setdefault(col, {})
                for p in path[:-1]:
                    node_dict = node_dict.setdefault(p, {})
                node_dict[path[-1]] = value
        for child in jax.tree_util.tree_leaves(
            node.submodule_calls, is_leaf=lambda n: isinstance(n, InterceptedFlaxModuleMethod)
        ):
            if isinstance(child, InterceptedFlaxModuleMethod) and child.module is None:
                visit(child)

    visit(root)
    return flax_vars, mutable, live_state


@pytree_dataclass
class InterceptedFlaxModuleMethod(Layer):
    """One Flax module method call, with its submodule calls as child layers.

    Attributes:
      module: The unbound Flax module (set on the root layer only; None on children).
      method_name: The name of the method that was called.
      scope_path: The Flax scope path of the module (`()` for the root).
      variables: This module's own Flax variables, as `{collection: {name:
        value}}`: `Parameter`s for "params", `StateVariable`s for mutable
        collections (shared with any other call of the same module), plain
        arrays for other collections. Frozen values (`ParameterValue`,
        `StateVariableValue`) run as well as live ones.
      submodule_calls: Child layers, one per submodule method call in call order,
        keyed by the submodule's path relative to this module (plus `.method` for
        methods other than `__call__`, and `#n` for repeated calls).

    Example:
      >>> import flax.linen as fnn
      >>> import jax, jax.numpy as jnp
      >>> from saikei.toolshed import unflaxify
      >>> class Two(fnn.Module):
      ...   @fnn.compact
      ...   def __call__(self, x):
      ...     h = fnn.Dense(4)(x)
      ...     return fnn.Dense(2)(h)
      >>> v = Two().init(jax.random.key(0), jnp.ones((1, 3)))
      >>> layer = unflaxify.unflaxify_apply(Two(), v, jnp.ones((1, 3)))
      >>> list(layer.submodule_calls)
      ['Dense_0', 'Dense_1']
    """

    module: Any = _static()
    method_name: str = _static()
    scope_path: tuple[str, ...] = _static()
    variables: dict[str, dict[str, Any]]
    submodule_calls: dict[str, Any]

    def __call__(
        self,
        argument: ArgsAndKwargs,
        /,
        random_streams: dict[str, Any] | None = None,
        rngs: Any = None,
        **side_inputs: Any,
    ) -> Any:
        """Runs the Flax method, dispatching submodule calls to the child layers.

        Args:
          argument: The arguments of the Flax method.
          random_streams: Root layer only: `{rng_name: sk.RandomStream}`; each
            call draws one key from every stream and hands them to Flax as
            `rngs` (e.g. `{"dropout": sk.RandomStream.from_base_key(key)}`).
          rngs: Root layer only, instead of `random_streams`: PRNG keys as for
            `flax.linen.Module.apply` (a key or `{rng_name: key}`), used as given.
          **side_inputs: Forwarded to every child layer (for saikei layers
            inserted into the tree).

        Returns:
          What the Flax method returns. Mutable collections are written back to
          their StateVariables.
        """
        if not isinstance(argument, ArgsAndKwargs):
            raise TypeError(
                f"InterceptedFlaxModuleMethod expects an ArgsAndKwargs argument, got"
                f" {type(argument).__name__}. Wrap the arguments with"
                " ArgsAndKwargs.capture(*args, **kwargs)."
            )
        run = _CURRENT.run
        pending = None if run is None else run.pending
        if pending is None or pending[:2] != (self.scope_path, self.method_name):
            if self.module is None:
                raise ValueError(
                    f"The layer for the Flax call at scope path {self.scope_path!r}"
                    f" ({self.method_name}) can only run inside its root layer's call; call"
                    " the root InterceptedFlaxModuleMethod instead (a child layer cannot be"
                    " called on its own or moved elsewhere in the tree)."
                )
            # A root layer starts its own Flax call, even inside another one.
            if random_streams is not None:
                side_inputs["random_streams"] = random_streams
            return self._run_root(argument, rngs, side_inputs)
        run.pending = None
        if random_streams is not None:
            side_inputs["random_streams"] = random_streams
        run.frames.append(_Frame(self, self.scope_path, side_inputs))
        try:
            return pending[2](*argument.args, **argument.kwargs)
        finally:
            run.frames.pop()

    def _run_root(self, argument: ArgsAndKwargs, rngs: Any, side_inputs: dict[str, Any]) -> Any:
        flax_vars, mutable, live_state = _collect_flax_variables(self)
        streams = side_inputs.get("random_streams")
        if rngs is None and streams is not None:
            if not isinstance(streams, dict):
                raise TypeError(
                    "unflaxify: the random_streams side input must be a dict"
                    f" {{rng_name: sk.RandomStream}}, got {type(streams).__name__}."
                )
            rngs = {name: stream.next_key() for name, stream in streams.items()}

        run = _Run()
        frames = run.frames

        def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, ctx: Any) -> Any:
            path = _scope_path(ctx.module)
            if _CURRENT.run is not run or path is None or ctx.method_name == "setup":
                return next_fun(*args, **kwargs)
            if not frames:
                frames.append(_Frame(self, self.scope_path, side_inputs))
                try:
                    return next_fun(*args, **kwargs)
                finally:
                    frames.pop()
            frame = frames[-1]
            if path == frame.path or path[: len(frame.path)] != frame.path:
                return next_fun(*args, **kwargs)
            key = _call_key(path[len(frame.path) :], ctx.method_name, frame.counts)
            child = frame.layer.submodule_calls.get(key)
            if child is None:
                raise ValueError(
                    f"Flax called {key!r} from {frame.path!r}, but no such call was recorded"
                    f" by unflaxify_apply (recorded: {list(frame.layer.submodule_calls)}). The"
                    " module's control flow must match the call that was unflaxified."
                )
            run.pending = (path, ctx.method_name, next_fun)
            try:
                return child(
                    ArgsAndKwargs(args=tuple(args), kwargs=dict(kwargs)), **frame.side_inputs
                )
            finally:
                run.pending = None

        outer = _CURRENT.run
        _CURRENT.run = run
        try:
            with fnn.intercept_methods(interceptor):
                result = self.module.apply(
                    flax_vars,
                    *argument.args,
                    rngs=rngs,
                    method=self.method_name,
                    mutable=mutable if mutable else False,
                    **argument.kwargs,
                )
        except InvalidRngError as e:
            raise ValueError(
                f"unflaxify: the Flax module needs a random key it was not given ({e}). Pass a"
                " side input random_streams={name: sk.RandomStream.from_base_key(key)} with a"
                " stream for each RNG name the module uses (e.g. 'dropout')."
            ) from e
        finally:
            _CURRENT.run = outer
        if not mutable:
            return result
        out, updates = result
        for col, path, var in live_state:
            node: Any = updates.get(col, {})
            for p in path:
                if not hasattr(node, "get") or p not in node:
                    break
                node = node[p]
            else:
                var.value = node
        return out


def _flatten_vars(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if hasattr(tree, "items") and not hasattr(tree, "shape"):
        out = []
        for k, v in tree.items():
            out.extend(_flatten_vars(v, (*prefix, str(k))))
        return out
    return [(prefix, tree)]


def unflaxify_apply(
    module: fnn.Module,
    variables: Any,
    *dummy_args: Any,
    rngs: Any = None,
    method: Callable[..., Any] | str | None = None,
    mutable: Any = False,
    **dummy_kwargs: Any,
) -> InterceptedFlaxModuleMethod:
    """Runs a Flax module once and returns its call as a patchable saikei layer.

    Args:
      module: The (unbound) `flax.linen` module.
      variables: Its variables, as for `module.apply`.
      *dummy_args: Example positional arguments, used to trace the call.
      rngs: PRNG keys for the traced call (as for `module.apply`).
      method: The method to call: a name, a function of the module class, or None
        for `__call__`.
      mutable: Which collections are mutable (as for `module.apply`); their
        variables become `StateVariable`s labelled `FlaxVarLabel(collection,
        dotted_path)`. "params" become `Parameter`s labelled by the dotted
        Flax path (e.g. `"Dense_0.kernel"`); other collections stay arrays.
      **dummy_kwargs: Example keyword arguments.

    Returns:
      The root `InterceptedFlaxModuleMethod`; call it with
      `ArgsAndKwargs.capture(*args, **kwargs)` (and a `random_streams` side
      input, `{rng_name: sk.RandomStream}`, if the module draws random numbers).

    Example:
      >>> import flax.linen as fnn
      >>> import jax, jax.numpy as jnp
      >>> from saikei.toolshed import unflaxify
      >>> v = fnn.Dense(2).init(jax.random.key(0), jnp.ones((1, 3)))
      >>> layer = unflaxify.unflaxify_apply(fnn.Dense(2), v, jnp.ones((1, 3)))
      >>> sorted(layer.variables["params"])
      ['bias', 'kernel']
    """
    if not isinstance(module, fnn.Module):
        raise TypeError(f"unflaxify_apply expects a flax.linen.Module, got {module!r}.")
    if method is None:
        method_name = "__call__"
    elif isinstance(method, str):
        method_name = method
    elif callable(method) and hasattr(type(module), getattr(method, "__name__", "")):
        method_name = method.__name__
    else:
        raise ValueError(
            f"unflaxify_apply: method must be None, a method name or a method of"
            f" {type(module).__name__}; got {method!r}."
        )

    # Record the tree of calls: each record is [path, method, {key: record}].
    root: list[Any] = [(), method_name, {}]
    stack: list[tuple[list[Any], dict[str, int]]] = []

    def recorder(next_fun: Callable[..., Any], args: Any, kwargs: Any, ctx: Any) -> Any:
        path = _scope_path(ctx.module)
        if path is None or ctx.method_name == "setup":
            return next_fun(*args, **kwargs)
        if not stack:
            record = root
        else:
            parent, counts = stack[-1]
            if path == parent[0] or path[: len(parent[0])] != parent[0]:
                return next_fun(*args, **kwargs)
            key = _call_key(path[len(parent[0]) :], ctx.method_name, counts)
            record = [path, ctx.method_name, {}]
            parent[2][key] = record
        stack.append((record, {}))
        try:
            return next_fun(*args, **kwargs)
        finally:
            stack.pop()

    with fnn.intercept_methods(recorder):
        module.apply(
            variables, *dummy_args, rngs=rngs, method=method_name, mutable=mutable, **dummy_kwargs
        )

    # One saikei variable per Flax variable, placed on the deepest recorded call
    # whose module owns it (or contains its owner).
    records: list[list[Any]] = []

    def walk(rec: list[Any]) -> None:
        records.append(rec)
        for child in rec[2].values():
            walk(child)

    walk(root)
    own: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    paths = {tuple(r[0]) for r in records}
    for col, tree in dict(variables).items():
        is_state = col != "params" and mutable is not False and in_filter(mutable, col)
        for full_path, value in _flatten_vars(tree):
            owner = full_path[:-1]
            while owner not in paths:
                owner = owner[:-1]
            dotted = ".".join(full_path)
            if is_state:
                var: Any = StateVariable(value, label=FlaxVarLabel(col, dotted))
            elif col == "params":
                var = Parameter(label=dotted, value=value)
            else:
                var = value
            name = "/".join(full_path[len(owner) :])
            own.setdefault(owner, {}).setdefault(col, {})[name] = var

    def build(rec: list[Any], is_root: bool) -> InterceptedFlaxModuleMethod:
        path, name, children = rec
        return InterceptedFlaxModuleMethod(
            module=module if is_root else None,
            method_name=name,
            scope_path=tuple(path),
            variables={c: dict(vs) for c, vs in own.get(tuple(path), {}).items()},
            submodule_calls={k: build(c, False) for k, c in children.items()},
        )

    return build(root, True)
