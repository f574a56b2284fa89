"""Activation, attribution and path patching, each one compiled program.

`activation_patch` runs the model on the corrupted tokens once per cell of a
grid (say every layer x every position), with the clean activation patched
into that cell, and returns `metric` of each run. The runs are not a Python
loop: they are one forward pass batched over the cells (`jax.vmap`, or
`jax.lax.map` in chunks of `batch_size` cells), compiled once per model
structure, token shape, names and grid. `attribution_patch` estimates the
same grid from one forward and one backward pass. `path_patch` measures the
effect of some components on the metric through chosen receivers only.

Conventions (as in TransformerLens): the model runs on `corrupted`, the
patched-in values come from `clean`; `metric(logits)` returns a scalar, such
as `interp.logit_diff(correct_id, wrong_id)`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import freeze_variables, select
from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.interp._interventions import Intervention, InterventionSite, intervene
from saikei.interp._metrics import LogitDiff
from saikei.interp._run_with_cache import run_with_cache, select_names
from saikei.models.transformer import _hook_points, model_parts
from saikei.nn import Layer

HookPoint = _hook_points.HookPoint


# One jit for every patching function: arrays are traced, everything else is static. ---


class _ArraySlot:
    """Marks where an array leaf was taken out of a flattened tree."""

    def __repr__(self) -> str:
        return "_ARRAY"


_ARRAY = _ArraySlot()


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic | jax.core.Tracer)


@functools.partial(jax.jit, static_argnums=(1,))
def _run(arrays: list[Any], static: tuple[Any, ...]) -> Any:
    body, plan, treedef, statics = static
    it = iter(arrays)
    leaves = [next(it) if s is _ARRAY else s for s in statics]
    return body(*jax.tree_util.tree_unflatten(treedef, leaves), plan=plan)


def _call(body: Callable[..., Any], plan: Any, *args: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    arrays = [leaf for leaf in leaves if _is_array(leaf)]
    statics = tuple(_ARRAY if _is_array(leaf) else leaf for leaf in leaves)
    return _run(arrays, (body, plan, treedef, statics))


# Interventions used by the patching programs ---------------------------------------------


def _layer_of(name: str) -> int:
    return int(name.split(".")[1])


def _for_hook(values: Mapping[str, Any], names: Sequence[str], hook: HookPoint) -> Any:
    """The value for `hook`: `values[name]`, or, in a LayerStack, stacked over its layers."""
    if hook.layers is None:
        return values[names[0]]
    first = values[names[0]]
    by_layer = {_layer_of(n): values[n] for n in names}
    zero = nx.zeros(first.named_shape, first.dtype)
    return nx.stack([by_layer.get(i, zero) for i in hook.layers], hook.stack_axis)


def _layer_matches(layer: Any, wanted: Any) -> Any:
    if nx.is_namedarray(layer):
        return nx.nmap(lambda i: i == wanted)(layer)
    return nx.wrap(jnp.asarray(layer == wanted))


@pytree_dataclass
class _PatchCell(Intervention):
    """Puts `clean` in place of the activation in one cell: a layer and one index per axis."""

    clean: Any
    coords: dict[str, Any]
    layer: Any = None

    def for_site(self, names: Sequence[str], hook: HookPoint) -> Intervention:
        return dataclasses.replace(self, clean=_for_hook(self.clean, names, hook))

    def apply(self, value, *, layer, side_inputs):
        mask = nx.wrap(jnp.asarray(True))
        if self.layer is not None:
            mask = mask & _layer_matches(layer, self.layer)
        for axis, index in self.coords.items():
            mask = mask & nx.nmap(lambda i, index=index: i == index)(
                nx.arange(axis, value.named_shape[axis])
            )
        return nx.nmap(jnp.where)(mask, self.clean.astype(value.dtype), value)


@pytree_dataclass
class _AddDelta(Intervention):
    """Adds `deltas[name]` (zeros, differentiated with respect to)."""

    deltas: dict[str, Any]

    def for_site(self, names: Sequence[str], hook: HookPoint) -> Intervention:
        return dataclasses.replace(self, deltas={"": _for_hook(self.deltas, names, hook)})

    def apply(self, value, *, layer, side_inputs):
        return value + self.deltas[""].astype(value.dtype)


@pytree_dataclass
class _SetTo(Intervention):
    """Sets the activation to `values[name]`, where `masks[name]` holds (everywhere if None)."""

    values: dict[str, Any]
    masks: dict[str, Any]

    def for_site(self, names: Sequence[str], hook: HookPoint) -> Intervention:
        values = _for_hook(self.values, names, hook)
        masks = {n: m for n, m in self.masks.items() if n in names}
        if not masks:
            return dataclasses.replace(self, values={"": values}, masks={})
        full = {n: self.masks.get(n) for n in names}
        for n, m in full.items():
            if m is None:
                full[n] = nx.wrap(jnp.asarray(True))
        if hook.layers is not None:
            axes = next(m for m in full.values() if m.named_shape).named_shape
            full = {n: m.broadcast_to((), axes) for n, m in full.items()}
        return dataclasses.replace(
            self, values={"": values}, masks={"": _for_hook(full, names, hook)}
        )

    def apply(self, value, *, layer, side_inputs):
        new = self.values[""].astype(value.dtype)
        if not self.masks:
            return new + nx.zeros(value.named_shape, value.dtype)
        return nx.nmap(jnp.where)(self.masks[""], new, value)


@pytree_dataclass
class _TakePosition(Layer):
    """Keeps one `seq` index (as a `seq` axis of size 1): logits only where the metric reads."""

    position: int = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        p = self.position
        return nx.nmap(lambda a: a[p : p + 1] if p != -1 else a[-1:])(value.untag("seq")).tag("seq")


def _logits_where_read(model: Any, metric: Any) -> tuple[Any, Any]:
    """For a `LogitDiff`, unembeds only the position it reads (the same metric, less work)."""
    if not isinstance(metric, LogitDiff):
        return model, metric

    def is_final_norm(node: Any) -> bool:
        hook = node.sublayers[0] if isinstance(node, InterventionSite) else node
        return hook.name == "final_norm"

    selection = select(model).at_instances_of((InterventionSite, HookPoint)).where(is_final_norm)
    if selection.count() != 1:
        return model, metric
    narrowed = selection.insert_after(_TakePosition(metric.position))
    return narrowed, dataclasses.replace(metric, position=0)


# Shared checks ---------------------------------------------------------------------------


def _scalar(value: Any, where: str) -> jax.Array:
    if nx.is_namedarray(value):
        if value.named_shape or value.positional_shape:
            raise ValueError(
                f"{where}: metric must return a scalar, got a NamedArray with shape"
                f" {value.named_shape}. Reduce over the batch (e.g. a mean)."
            )
        value = value.unwrap()
    value = jnp.asarray(value)
    if value.shape:
        raise ValueError(f"{where}: metric must return a scalar, got shape {value.shape}.")
    return value.astype(jnp.float32)


def _prepare(
    model: Any, clean: Any, corrupted: Any, metric: Any, where: str
) -> model_parts.TransformerLM:
    if not isinstance(model, model_parts.TransformerLM):
        raise TypeError(f"{where}: expected a TransformerLM, got {type(model).__name__}.")
    for what, tokens in (("clean", clean), ("corrupted", corrupted)):
        if not nx.is_namedarray(tokens) or "seq" not in tokens.named_shape:
            raise ValueError(
                f"{where}: {what} must be token ids in a NamedArray with a 'seq' axis, got"
                f" {getattr(tokens, 'named_shape', type(tokens).__name__)}."
            )
    if clean.named_shape != corrupted.named_shape:
        raise ValueError(
            f"{where}: clean {clean.named_shape} and corrupted {corrupted.named_shape} tokens"
            " must have the same axes and sizes (pad them to one length)."
        )
    if not callable(metric):
        raise TypeError(f"{where}: metric must be a function of the logits, got {metric!r}.")
    return freeze_variables(_hook_points.with_hook_points(model))


def _names(model: Any, names: Any, where: str) -> tuple[str, ...]:
    found = tuple(select_names(_hook_points.hook_names(model), names, where))
    if not found:
        raise ValueError(f"{where}: no hook point matches {names!r}.")
    return found


def _check_over(names: Sequence[str], over: Any, where: str) -> tuple[str, ...]:
    if isinstance(over, str):
        over = (over,)
    over = tuple(over)
    if len(set(over)) != len(over):
        raise ValueError(f"{where}: over={over!r} names an axis twice.")
    if "layer" in over:
        bad = [n for n in names if not n.startswith("blocks.")]
        if bad:
            raise ValueError(f"{where}: over has 'layer', but {bad} are not inside blocks.")
    elif len(names) > 1:
        raise ValueError(
            f"{where}: names match {len(names)} hook points ({list(names)[:4]}...); add 'layer'"
            " to over, or name a single hook point."
        )
    return over


def _grid_axes(values: Mapping[str, Any], over: tuple[str, ...], where: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    first = next(iter(values.values()))
    for axis in over:
        if axis == "layer":
            sizes[axis] = len(values)
            continue
        if axis not in first.named_shape:
            raise ValueError(
                f"{where}: over has {axis!r}, but the values at {next(iter(values))!r} have axes"
                f" {first.named_shape}. Choose axes of the activation (e.g. 'seq', 'heads')."
            )
        sizes[axis] = first.named_shape[axis]
    for name, value in values.items():
        if value.named_shape != first.named_shape:
            raise ValueError(
                f"{where}: the values at {name!r} have axes {value.named_shape}, unlike"
                f" {first.named_shape}; patch hook points of one kind at a time."
            )
    return sizes


# activation_patch ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    names: tuple[str, ...]
    over: tuple[str, ...]
    batch_size: int | None = None


def _activation_body(model, clean, corrupted, metric, side, *, plan: _Plan):
    where = "interp.activation_patch"
    _, cache = run_with_cache(model, clean, names=list(plan.names), **side)
    values = {n: cache[n] for n in plan.names}
    sizes = _grid_axes(values, plan.over, where)
    layers = jnp.asarray([_layer_of(n) if "layer" in plan.over else 0 for n in plan.names])
    shape = tuple(sizes.values())

    narrow_model, narrow_metric = _logits_where_read(model, metric)

    def one(cell: jax.Array) -> jax.Array:
        coords = dict(zip(plan.over, jnp.unravel_index(cell, shape)))
        layer = layers[coords.pop("layer")] if "layer" in coords else None
        patch = _PatchCell(values, coords, layer)
        patched = intervene(narrow_model, {n: patch for n in plan.names})
        return _scalar(narrow_metric(patched(corrupted, **side)), where)

    cells = jnp.arange(math.prod(shape))
    if plan.batch_size is None or plan.batch_size >= len(cells):
        out = jax.vmap(one)(cells)
    else:
        out = jax.lax.map(one, cells, batch_size=plan.batch_size)
    return nx.wrap(out.reshape(shape), *plan.over)


def activation_patch(
    model: model_parts.TransformerLM,
    clean: nx.NamedArray,
    corrupted: nx.NamedArray,
    metric: Callable[[nx.NamedArray], Any],
    names: Any = "resid_pre",
    over: Sequence[str] = ("layer", "seq"),
    *,
    batch_size: int | None = 32,
    **side_inputs: Any,
) -> nx.NamedArray:
    """The metric of the corrupted run with one cell of clean activations patched in, per cell.

    For each cell of the grid `over` (e.g. a block and a position), the
    model runs on `corrupted` with the activation at that cell replaced by
    its value on `clean`, and `metric(logits)` is recorded. All cells run as
    one compiled program batched over the cells.

    Args:
      model: A `TransformerLM` (hook points are inserted if missing).
      clean: Token ids (axis `seq`, any batch axes) of the clean run.
      corrupted: Token ids of the corrupted run, with the same axes.
      metric: A function from logits to a scalar, e.g. `interp.logit_diff`.
        Its arrays (a `LogitDiff`'s ids) are traced; a plain function is
        part of the compiled program's identity.
      names: The hook points: a site (`"resid_pre"`, `"attn.z"`, ...), a
        full name, a glob or a list, as `run_with_cache` accepts.
      over: The grid's axes: `"layer"` (one entry per matched block) and
        axes of the activation (`"seq"`, `"heads"`, ...). A cell patches one
        index of each; the other axes (batch, embedding, ...) are patched
        whole.
      batch_size: Cells per batched forward pass (chunks run one after the
        other by `jax.lax.map`, inside the one compiled program); None runs
        every cell in one batch (most memory).
      **side_inputs: Passed to the model in every run (e.g.
        `token_positions`).

    Returns:
      A NamedArray with the axes `over` (e.g. `{layer, seq}`).

    Example:
      >>> import jax
      >>> from saikei import interp, sk
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=8)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> clean = sk.nx.wrap(jax.numpy.array([1, 2, 3, 4]), "seq")
      >>> corrupted = sk.nx.wrap(jax.numpy.array([1, 5, 3, 4]), "seq")
      >>> grid = interp.activation_patch(lm, clean, corrupted, interp.logit_diff(2, 5))
      >>> grid.named_shape
      {'layer': 2, 'seq': 4}
    """
    where = "interp.activation_patch"
    model = _prepare(model, clean, corrupted, metric, where)
    names = _names(model, names, where)
    over = _check_over(names, over, where)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"{where}: batch_size must be None or a positive int, got {batch_size!r}.")
    side_inputs.setdefault("token_positions", nx.arange("seq", clean.named_shape["seq"]))
    plan = _Plan(names, over, batch_size)
    return _call(_activation_body, plan, model, clean, corrupted, metric, side_inputs)


# attribution_patch -----------------------------------------------------------------------


def _attribution_body(model, clean, corrupted, metric, side, *, plan: _Plan):
    where = "interp.attribution_patch"
    _, clean_cache = run_with_cache(model, clean, names=list(plan.names), **side)
    clean_values = {n: clean_cache[n] for n in plan.names}
    _grid_axes(clean_values, plan.over, where)
    zeros = {n: nx.zeros(v.named_shape, v.dtype) for n, v in clean_values.items()}

    def run(deltas: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        add = _AddDelta(deltas)
        patched = intervene(model, {n: add for n in plan.names})
        logits, cache = run_with_cache(patched, corrupted, names=list(plan.names), **side)
        return _scalar(metric(logits), where), {n: cache[n] for n in plan.names}

    (value, corrupted_values), grads = jax.value_and_grad(run, has_aux=True)(zeros)
    keep = [a for a in plan.over if a != "layer"]
    per_name = []
    for n in plan.names:
        change = (clean_values[n] - corrupted_values[n]) * grads[n]
        summed = [a for a in change.named_shape if a not in keep]
        per_name.append(nx.nmap(jnp.sum)(change.untag(*summed)) if summed else change)
    grid = nx.stack(per_name, "layer") if "layer" in plan.over else per_name[0]
    return (value + grid).order_as(*plan.over)


def attribution_patch(
    model: model_parts.TransformerLM,
    clean: nx.NamedArray,
    corrupted: nx.NamedArray,
    metric: Callable[[nx.NamedArray], Any],
    names: Any = "resid_pre",
    over: Sequence[str] = ("layer", "seq"),
    **side_inputs: Any,
) -> nx.NamedArray:
    """A first-order estimate of the `activation_patch` grid from one forward and one backward pass.

    The metric of the corrupted run is linearized in the activations at the
    patched hook points: each cell gets `metric(corrupted) + sum((clean -
    corrupted) * d metric / d activation)`, the sum running over the cell's
    part of the activation (the axes not in `over`). Subtract
    `metric(corrupted)` for the attribution itself. The clean activations
    come from one more forward pass.

    Args:
      model: A `TransformerLM` (hook points are inserted if missing).
      clean: Token ids of the clean run.
      corrupted: Token ids of the corrupted run (same axes).
      metric: A function from logits to a scalar; it must be differentiable.
      names: The hook points, as for `activation_patch`.
      over: The grid's axes, as for `activation_patch`.
      **side_inputs: Passed to the model (e.g. `token_positions`).

    Returns:
      A NamedArray with the axes `over`, an estimate of `activation_patch`'s.

    Example:
      >>> import jax
      >>> from saikei import interp, sk
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=8)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> clean = sk.nx.wrap(jax.numpy.array([1, 2, 3, 4]), "seq")
      >>> corrupted = sk.nx.wrap(jax.numpy.array([1, 5, 3, 4]), "seq")
      >>> interp.attribution_patch(lm, clean, corrupted, interp.logit_diff(2, 5),
      ...     names="attn.z", over=("layer", "heads")).named_shape
      {'layer': 2, 'heads': 2}
    """
    where = "interp.attribution_patch"
    model = _prepare(model, clean, corrupted, metric, where)
    names = _names(model, names, where)
    over = _check_over(names, over, where)
    side_inputs.setdefault("token_positions", nx.arange("seq", clean.named_shape["seq"]))
    return _call(
        _attribution_body, _Plan(names, over), model, clean, corrupted, metric, side_inputs
    )


# path_patch ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _PathPlan:
    senders: tuple[tuple[str, tuple[int, ...] | None], ...]
    receivers: tuple[tuple[str, tuple[int, ...] | None], ...]
    frozen: tuple[str, ...]


def _head_mask(value: nx.NamedArray, heads: tuple[int, ...], name: str, where: str) -> Any:
    axis = "heads" if "heads" in value.named_shape else "kv_heads"
    if axis not in value.named_shape:
        raise ValueError(
            f"{where}: heads were given for {name!r}, whose values have no head axis"
            f" ({value.named_shape})."
        )
    size = value.named_shape[axis]
    bad = [h for h in heads if not 0 <= h < size]
    if bad:
        raise ValueError(f"{where}: heads {bad} at {name!r} are out of range [0, {size}).")
    chosen = jnp.asarray(heads, jnp.int32)
    return nx.nmap(lambda i: jnp.isin(i, chosen))(nx.arange(axis, size))


def _path_body(model, clean, corrupted, metric, side, *, plan: _PathPlan):
    where = "interp.path_patch"
    senders = dict(plan.senders)
    receivers = dict(plan.receivers)
    _, clean_cache = run_with_cache(model, clean, names=list(senders), **side)
    frozen_names = [n for n in plan.frozen if n not in receivers]
    _, corrupted_cache = run_with_cache(
        model, corrupted, names=sorted({*frozen_names, *senders}), **side
    )
    # Run A: senders clean, every other frozen component at its corrupted value.
    values = {n: corrupted_cache[n] for n in frozen_names}
    for name, heads in senders.items():
        clean_value = clean_cache[name]
        if heads is None:
            values[name] = clean_value
        else:
            mask = _head_mask(clean_value, heads, name, where)
            values[name] = nx.nmap(jnp.where)(mask, clean_value, corrupted_cache[name])
    set_a = _SetTo(values, {})
    run_a = intervene(model, {n: set_a for n in values})
    _, a_cache = run_with_cache(run_a, corrupted, names=list(receivers), **side)
    # Run B: only the receivers see what run A gave them.
    masks = {}
    for name, heads in receivers.items():
        if heads is not None:
            masks[name] = _head_mask(a_cache[name], heads, name, where)
    set_b = _SetTo({n: a_cache[n] for n in receivers}, masks)
    narrow_model, narrow_metric = _logits_where_read(model, metric)
    run_b = intervene(narrow_model, {n: set_b for n in receivers})
    return _scalar(narrow_metric(run_b(corrupted, **side)), where)


def _components(model: Any, spec: Any, what: str, where: str) -> tuple[Any, ...]:
    """`spec` (names, or {name_or_glob: heads or None}) as ((name, heads or None), ...)."""
    if isinstance(spec, Mapping):
        out: dict[str, tuple[int, ...] | None] = {}
        for pattern, heads in spec.items():
            if heads is not None:
                heads = (heads,) if isinstance(heads, int) else tuple(int(h) for h in heads)
            for name in _names(model, pattern, f"{where} ({what})"):
                if name in out:
                    raise ValueError(f"{where}: {what} name {name!r} more than once.")
                out[name] = heads
        return tuple(out.items())
    return tuple((name, None) for name in _names(model, spec, f"{where} ({what})"))


def path_patch(
    model: model_parts.TransformerLM,
    clean: nx.NamedArray,
    corrupted: nx.NamedArray,
    metric: Callable[[nx.NamedArray], Any],
    senders: Any,
    receivers: Any,
    *,
    freeze: Any = "attn.z",
    **side_inputs: Any,
) -> jax.Array:
    """The metric when the senders' clean values reach the output only through the receivers.

    Two runs on `corrupted`, in one compiled program: (A) the senders get
    their clean values and every hook point in `freeze` (by default every
    head's `attn.z`), other than the senders and receivers, is held at its
    corrupted value, so the change spreads only along paths that avoid the
    frozen components; the receivers' values are recorded. (B) only the
    receivers are set to what run A gave them, and `metric` is measured.
    With `freeze=()` and the last block's `resid_post` as receiver, this is
    the senders' total effect (`activation_patch` of the senders).

    Args:
      model: A `TransformerLM` (hook points are inserted if missing).
      clean: Token ids of the clean run.
      corrupted: Token ids of the corrupted run (same axes).
      metric: A function from logits to a scalar.
      senders: Hook names, globs or sites (e.g. `"blocks.0.attn.z"`), or
        `{name_or_glob: heads}` to patch only some heads (None: all).
      receivers: The same forms, e.g. `{"blocks.1.attn.q": [0, 2]}`.
      freeze: Hook names, globs or sites held at their corrupted values in
        run A (e.g. `("attn.z", "mlp_out")` to freeze MLPs too; `()` for
        none).
      **side_inputs: Passed to the model (e.g. `token_positions`).

    Returns:
      The metric of run B, a float32 scalar.

    Example:
      >>> import jax
      >>> from saikei import interp, sk
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=8)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> clean = sk.nx.wrap(jax.numpy.array([1, 2, 3, 4]), "seq")
      >>> corrupted = sk.nx.wrap(jax.numpy.array([1, 5, 3, 4]), "seq")
      >>> value = interp.path_patch(lm, clean, corrupted, interp.logit_diff(2, 5),
      ...     senders={"blocks.0.attn.z": [1]}, receivers={"blocks.1.attn.q": None})
      >>> value.shape
      ()
    """
    where = "interp.path_patch"
    model = _prepare(model, clean, corrupted, metric, where)
    sender_spec = _components(model, senders, "senders", where)
    receiver_spec = _components(model, receivers, "receivers", where)
    frozen: tuple[str, ...] = ()
    if freeze is not None and (not isinstance(freeze, Sequence) or len(freeze)):
        frozen = _names(model, freeze if isinstance(freeze, str) else list(freeze), where)
    frozen = tuple(n for n in frozen if n not in dict(sender_spec))
    side_inputs.setdefault("token_positions", nx.arange("seq", clean.named_shape["seq"]))
    plan = _PathPlan(sender_spec, receiver_spec, frozen)
    return _call(_path_body, plan, model, clean, corrupted, metric, side_inputs)
