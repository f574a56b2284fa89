"""A small stateful training loop for models whose parameters are `sk.Parameter` variables.

`StatefulTrainer.build(...)` takes a model holding variables, an optax optimizer and a
loss function, and `trainer.step(**kwargs)` runs one optimizer step, writing the new
parameter values (and the new values of the model's state variables) back into the
model's variables in place.

Parameters whose metadata has `"trainable": False` are frozen: they get no optimizer
state, no gradient is computed for them, and their variables are never written.

Across devices and processes nothing changes: lay the model out on a mesh (e.g.
`sharding_util.name_to_name_device_put(model, mesh, sharding_util.tensor_parallel_rules())`
or `load_pretrained(..., mesh=...)`), build global inputs from each process's slice of
the batch (`sharding_util.global_from_process_local`), and call `step` in every
process. The optimizer state is created with the parameters' shardings, and each step
is one compiled program over the whole mesh (XLA inserts the gradient reductions), so
losses and new parameters equal a single-process step on the same global batch up to
float rounding. See docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import optax

from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._tree_util import pretty_keystr
from saikei.core._variables import (
    AbstractVariable,
    Parameter,
    StateVariable,
    bind_variables,
    unbind_variables,
)

_STATIC = {"pytree_node": False}


class LossFunction(Protocol):
    """The calling convention of a loss function given to `StatefulTrainer`.

    It is called as `loss_fn(model=model, state=state, rng=rng, **kwargs)`, where
    `model` is the model with its variables bound to fresh copies holding the current
    values, `state` is the loss function's own state (`initial_loss_fn_state` on the
    first step), `rng` a per-step key, and `kwargs` the arguments given to `step`.
    It returns `(loss, new_state, aux_outputs)`: a scalar loss, a new state with the
    same structure as `state`, and any pytree, which `step` returns.

    Example:
      >>> import jax.numpy as jnp
      >>> def loss_fn(model, state, rng, x):
      ...     return jnp.sum((model.value * x) ** 2), state, {}
    """

    def __call__(self, *, model: Any, state: Any, rng: jax.Array, **kwargs: Any) -> Any:
        """Returns `(loss, new_state, aux_outputs)`."""
        ...


@pytree_dataclass
class InternalTrainerState(Struct):
    """The trainer's own state: step counter, optimizer state, loss-function state.

    Attributes:
      step: How many steps have run (an integer array).
      opt_state: The optax state for the trainable parameters, built from a dict
        mapping each trainable parameter's label to its value.
      loss_fn_state: The state threaded through the loss function.

    Example:
      >>> from saikei.toolshed import basic_training
      >>> basic_training.InternalTrainerState(step=0, opt_state=(), loss_fn_state=None).step
      0
    """

    step: Any
    opt_state: Any
    loss_fn_state: Any


def _is_trainable(var: AbstractVariable) -> bool:
    return isinstance(var, Parameter) and var.metadata.get("trainable", True) is not False


def _split_variables(
    model: Any,
) -> tuple[Any, list[Parameter], list[StateVariable], list[AbstractVariable]]:
    """Unbinds every variable of `model` and sorts them into trainable, state and frozen."""
    model_def, variables = unbind_variables(model)
    trainable: list[Parameter] = []
    states: list[StateVariable] = []
    frozen: list[AbstractVariable] = []
    for var in variables:
        if _is_trainable(var):
            trainable.append(var)  # type: ignore[arg-type]
        elif isinstance(var, StateVariable):
            states.append(var)
        else:
            frozen.append(var)
    return model_def, trainable, states, frozen


def _make_step_fn(optimizer_def: optax.GradientTransformation, loss_fn: LossFunction) -> Callable:
    """Builds the pure step function mapping current values to new values."""

    def step_fn(
        trainable_values: dict[Any, Any],
        state_values: tuple[Any, ...],
        trainer_state: InternalTrainerState,
        frozen_values: tuple[Any, ...],
        spec: _ModelSpec,
        root_rng: jax.Array,
        kwargs: dict[str, Any],
    ) -> tuple[dict[Any, Any], tuple[Any, ...], InternalTrainerState, Any]:
        model_def, trainable_defs, state_defs, frozen_defs = spec.parts
        rng = jax.random.fold_in(root_rng, trainer_state.step)

        def compute_loss(params: dict[Any, Any]) -> tuple[Any, Any]:
            # Fresh variable objects per trace: the loss function may mutate state
            # variables, and we read their new values back after the call.
            trainable = [
                Parameter(value=params[label], label=label, metadata=dict(meta))
                for label, meta in trainable_defs
            ]
            states = [
                StateVariable(value=v, label=label, metadata=dict(meta))
                for v, (label, meta) in zip(state_values, state_defs, strict=True)
            ]
            frozen = [
                var_type(value=v, label=label, metadata=dict(meta))
                for v, (var_type, label, meta) in zip(frozen_values, frozen_defs, strict=True)
            ]
            model = bind_variables(model_def, trainable + states + frozen)
            loss, new_loss_state, aux = loss_fn(
                model=model, state=trainer_state.loss_fn_state, rng=rng, **kwargs
            )
            new_states = tuple(var.value for var in states)
            return loss, (new_states, new_loss_state, aux)

        grads, (new_states, new_loss_state, aux) = jax.grad(compute_loss, has_aux=True)(
            trainable_values
        )
        updates, new_opt_state = optimizer_def.update(
            grads, trainer_state.opt_state, trainable_values
        )
        new_params = optax.apply_updates(trainable_values, updates)
        new_trainer_state = InternalTrainerState(
            step=trainer_state.step + 1, opt_state=new_opt_state, loss_fn_state=new_loss_state
        )
        return new_params, new_states, new_trainer_state, aux

    return step_fn


@pytree_dataclass
class StatefulTrainer(Struct):
    """A trainer that updates the model's variables and its own state in place.

    Build it with `StatefulTrainer.build`; each `step(**kwargs)` computes the loss
    gradient with respect to the trainable parameters, applies the optimizer, writes
    the new values into the model's `Parameter` and `StateVariable` objects, and
    returns the loss function's auxiliary outputs.

    Attributes:
      root_rng: Base key; step `i` uses `jax.random.fold_in(root_rng, i)`.
      model: The model being trained (holding variables).
      state: A `StateVariable` holding the `InternalTrainerState`.
      optimizer_def: The optax optimizer.
      loss_fn: The loss function (see `LossFunction`).
      step_fn: The (possibly jitted) pure step function built by `build`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from saikei import sk
      >>> from saikei.toolshed import basic_training
      >>> w = sk.Parameter(value=jnp.ones(3), label="w")
      >>> def loss_fn(model, state, rng, x):
      ...     return jnp.sum((model.value * x) ** 2), state, {"n": 1}
      >>> trainer = basic_training.StatefulTrainer.build(
      ...     root_rng=jax.random.key(0), model=w, optimizer_def=optax.sgd(0.1), loss_fn=loss_fn)
      >>> trainer.step(x=jnp.ones(3))
      {'n': Array(1, dtype=int32, weak_type=True)}
      >>> w.value
      Array([0.8, 0.8, 0.8], dtype=float32)
    """

    root_rng: jax.Array
    model: Any
    state: StateVariable
    optimizer_def: Any = dataclasses.field(metadata=_STATIC)
    loss_fn: Any = dataclasses.field(metadata=_STATIC)
    step_fn: Any = dataclasses.field(metadata=_STATIC)

    @classmethod
    def build(
        cls,
        root_rng: jax.Array,
        model: Any,
        optimizer_def: optax.GradientTransformation,
        loss_fn: LossFunction,
        initial_loss_fn_state: Any = None,
        jit: bool = True,
        donate_states: bool = False,
    ) -> StatefulTrainer:
        """Builds a trainer whose optimizer state covers only the trainable parameters.

        Args:
          root_rng: Base key for the per-step keys given to `loss_fn`.
          model: A model holding `sk.Parameter` (and possibly `sk.StateVariable`)
            objects. Parameters with `metadata["trainable"] == False` are frozen.
          optimizer_def: An optax `GradientTransformation`.
          loss_fn: Called as `loss_fn(model=, state=, rng=, **kwargs)` and returning
            `(loss, new_state, aux_outputs)`.
          initial_loss_fn_state: The loss function's state for the first step.
          jit: Compile the step function with `jax.jit`.
          donate_states: Donate the buffers of trainable parameters, state
            variables and the trainer state to the compiled step (saves memory;
            the old arrays become invalid). Frozen parameters are never donated.

        Returns:
          A new `StatefulTrainer`.

        Raises:
          ValueError: if the model holds variable slots, or no trainable parameter.

        Example:
          >>> import jax, jax.numpy as jnp, optax
          >>> from saikei import sk
          >>> from saikei.toolshed import basic_training
          >>> model = {"a": sk.Parameter(value=jnp.ones(2), label="a"),
          ...          "b": sk.Parameter(value=jnp.ones(2), label="b",
          ...                            metadata={"trainable": False})}
          >>> trainer = basic_training.StatefulTrainer.build(
          ...     jax.random.key(0), model, optax.adam(1e-2),
          ...     lambda model, state, rng: (jnp.sum(model["a"].value), state, None))
          >>> sorted(trainer.state.value.opt_state[0].mu)
          ['a']
        """
        _check_no_slots(model)
        _, trainable, _, _ = _split_variables(model)
        if not trainable:
            raise ValueError(
                "StatefulTrainer.build: the model holds no trainable sk.Parameter (every"
                " parameter has metadata['trainable'] == False, or there are none). Give"
                " the trainer a model with at least one trainable parameter."
            )
        params = {var.label: var.value for var in trainable}
        opt_state = optimizer_def.init(params)
        trainer_state = InternalTrainerState(
            step=jax.numpy.asarray(0, dtype=jax.numpy.int32),
            opt_state=opt_state,
            loss_fn_state=initial_loss_fn_state,
        )
        step_fn = _make_step_fn(optimizer_def, loss_fn)
        if jit:
            step_fn = jax.jit(step_fn, donate_argnums=(0, 1, 2) if donate_states else ())
        return cls(
            root_rng=root_rng,
            model=model,
            state=StateVariable(trainer_state),
            optimizer_def=optimizer_def,
            loss_fn=loss_fn,
            step_fn=step_fn,
        )

    def step(self, **kwargs: Any) -> Any:
        """Runs one training step and returns the loss function's auxiliary outputs.

        Args:
          **kwargs: Passed on to the loss function (inputs, targets, ...).

        Returns:
          The `aux_outputs` returned by the loss function.

        Example:
          >>> import jax, jax.numpy as jnp, optax
          >>> from saikei import sk
          >>> from saikei.toolshed import basic_training
          >>> w = sk.Parameter(value=jnp.array(3.0), label="w")
          >>> trainer = basic_training.StatefulTrainer.build(
          ...     jax.random.key(0), w, optax.sgd(0.5),
          ...     lambda model, state, rng: (model.value**2, state, model.value))
          >>> trainer.step()
          Array(3., dtype=float32, weak_type=True)
          >>> w.value
          Array(0., dtype=float32)
        """
        model_def, trainable, states, frozen = _split_variables(self.model)
        # Labels and metadata are static under jit, so the compiled step is reused
        # for as long as the model's variables keep their labels.
        model_spec = _ModelSpec(
            model_def,
            tuple((v.label, _Frozen(v.metadata)) for v in trainable),
            tuple((v.label, _Frozen(v.metadata)) for v in states),
            tuple((type(v), v.label, _Frozen(v.metadata)) for v in frozen),
        )
        new_params, new_states, new_trainer_state, aux = self.step_fn(
            {var.label: var.value for var in trainable},
            tuple(var.value for var in states),
            self.state.value,
            tuple(var.value for var in frozen),
            model_spec,
            self.root_rng,
            kwargs,
        )
        for var in trainable:
            var.value = new_params[var.label]
        for var, value in zip(states, new_states, strict=True):
            var.value = value
        self.state.value = new_trainer_state
        return aux


class _Frozen:
    """A hashable, comparable wrapper for variable metadata kept static under jit."""

    __slots__ = ("items",)

    def __init__(self, metadata: dict[Any, Any]):
        self.items = dict(metadata)

    def __iter__(self) -> Any:
        return iter(self.items.items())

    def keys(self) -> Any:
        return self.items.keys()

    def __getitem__(self, key: Any) -> Any:
        return self.items[key]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and self.items == other.items

    def __hash__(self) -> int:
        return hash(repr(sorted(self.items.items(), key=repr)))


@jax.tree_util.register_pytree_node_class
class _ModelSpec:
    """The unbound model (a pytree child) plus static descriptions of the other variables."""

    def __init__(
        self, model_def: Any, trainable_defs: tuple, state_defs: tuple, frozen_defs: tuple
    ):
        self.parts = (model_def, trainable_defs, state_defs, frozen_defs)

    def tree_flatten(self) -> tuple[tuple[Any], tuple]:
        return (self.parts[0],), self.parts[1:]

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple[Any]) -> _ModelSpec:
        return cls(children[0], *aux)


def _check_no_slots(model: Any) -> None:
    from saikei.core._variables import AbstractVariableSlot

    leaves = jax.tree_util.tree_flatten_with_path(
        model, is_leaf=lambda x: isinstance(x, AbstractVariableSlot)
    )[0]
    for path, leaf in leaves:
        if isinstance(leaf, AbstractVariableSlot):
            raise ValueError(
                f"StatefulTrainer.build: the model holds the unbound slot {leaf!r} at"
                f" {pretty_keystr(path, model)}. Bind its variable first"
                " (sk.bind_variables) so the trainer can update it in place."
            )
