"""Interventions as values: layers that change an activation at a named hook point.

`intervene(model, {name_or_glob: intervention})` puts each intervention right
after the hook point(s) it names, inside an `InterventionSite` (a
`Sequential` of the hook point and the interventions placed there). The hook
point still sees (and a cache still records) the value before the
intervention; every later layer sees the changed value. Interventions are
ordinary layers whose arrays are pytree leaves, so a new value of the same
shape never recompiles a jitted call or `generate`, and they run at every
decoding step.

Interventions see values as users do (one `heads` axis in Hugging Face
order, `kv_heads` for keys and values; see the `saikei.interp` docstring),
whatever the model's internal head layout. `positions=` selects tokens by
their absolute position, read from the `token_positions` side input (so in
`generate` an intervention at position 7 acts when token 7 is processed,
during the prefill or at the decoding step that produces it).
"""

from __future__ import annotations

import abc
import dataclasses
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from saikei import nn
from saikei.core import named_axes as nx
from saikei.core import select
from saikei.core._struct import pytree_dataclass
from saikei.models.transformer import _hook_points, model_parts

HookPoint = _hook_points.HookPoint

# Axes that describe one token's features; mean ablation averages over all others.
_FEATURE_AXES = frozenset(
    {"heads", "kv_heads", "projection", "embedding", "neurons", "vocabulary", "kv_seq"}
)


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


def _as_indices(value: Any, where: str, what: str = "positions") -> jax.Array | None:
    """None, an int or a 1-D sequence of non-negative ints, as an int32 array."""
    if value is None:
        return None
    hint = "absolute token positions" if what == "positions" else "head indices"
    try:
        array = jnp.asarray(value)
    except TypeError as error:
        raise TypeError(
            f"{where}: {what} must be None, an int or a sequence of ints, got {value!r}."
        ) from error
    if not jnp.issubdtype(array.dtype, jnp.integer) or array.ndim > 1:
        raise TypeError(
            f"{where}: {what} must be None, an int or a 1-D sequence of ints ({hint}),"
            f" got {value!r}."
        )
    if not isinstance(array, jax.core.Tracer) and bool((array < 0).any()):
        extra = " (0 is the first real token; padding has -1 and is never selected)"
        raise ValueError(
            f"{where}: {what} must be >= 0, they are {hint}"
            f"{extra if what == 'positions' else ''}; got {value!r}."
        )
    return array.astype(jnp.int32).reshape(-1)


def _as_value(value: Any, where: str) -> Any:
    if nx.is_namedarray(value):
        if value.positional_shape:
            raise ValueError(
                f"{where}: the value has positional axes {value.positional_shape}; name them"
                " (e.g. sk.nx.wrap(v, 'embedding')) so they line up with the activation."
            )
        return value
    array = jnp.asarray(value)
    if array.ndim:
        raise ValueError(
            f"{where}: got an array of shape {array.shape} without axis names; wrap it, e.g."
            " sk.nx.wrap(vector, 'embedding'), so it lines up with the activation by name."
        )
    return nx.wrap(array)


def _check_fits(value: nx.NamedArray, activation: nx.NamedArray, where: str) -> None:
    shape = activation.named_shape
    bad = {n: s for n, s in value.named_shape.items() if shape.get(n) != s}
    if bad:
        raise ValueError(
            f"{where}: the value has axes {value.named_shape}, which do not fit the activation's"
            f" {shape} (mismatched: {bad}). Give it a subset of the activation's axes with the"
            " same sizes; it is broadcast over the rest."
        )


def _where(mask: Any, new: nx.NamedArray, old: nx.NamedArray) -> nx.NamedArray:
    if mask is True:
        return new
    return nx.nmap(jnp.where)(mask, new, old)


def _position_mask(
    positions: jax.Array | None,
    activation: nx.NamedArray,
    side_inputs: Mapping[str, Any],
    where: str,
) -> Any:
    """True where the token's absolute position is in `positions` (None: everywhere)."""
    if positions is None:
        return True
    token_positions = side_inputs.get("token_positions")
    if not nx.is_namedarray(token_positions):
        raise ValueError(
            f"{where}: positions= needs the side input token_positions (a NamedArray over"
            " 'seq'); call the model as a TransformerLM, which always passes it."
        )
    if "seq" not in activation.named_shape:
        raise ValueError(
            f"{where}: positions= selects tokens along 'seq', but the activation has axes"
            f" {activation.named_shape}."
        )
    return nx.nmap(lambda t: jnp.isin(t, positions))(token_positions)


class Intervention(nn.Layer, abc.ABC):
    """Base class of the changes `interp.intervene` puts at hook points.

    A subclass implements `apply(value, *, layer, side_inputs)`, which gets
    the activation as users see it (one `heads` axis) and returns the new one
    with the same axes. `layer` is the block index the hook point runs in (an
    int, a traced int32 NamedArray inside a LayerStack, or None outside
    blocks). Called directly, an intervention applies itself with
    `layer=None`.

    Example:
      >>> from saikei import interp, sk
      >>> interp.Scale(2.0)(sk.nx.ones({"seq": 2})).unwrap("seq").tolist()
      [2.0, 2.0]
    """

    @abc.abstractmethod
    def apply(
        self, value: nx.NamedArray, *, layer: Any, side_inputs: Mapping[str, Any]
    ) -> nx.NamedArray:
        """Returns the changed activation."""

    def for_site(self, names: Sequence[str], hook: HookPoint) -> Intervention:
        """The intervention to place at `hook` for its block names `names` (default: itself).

        Example:
          >>> from saikei import interp
          >>> from saikei.models.transformer import _hook_points
          >>> add = interp.Add(1.0)
          >>> add.for_site(["embed"], _hook_points.HookPoint("embed")) is add
          True
        """
        del names, hook
        return self

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return self.apply(value, layer=None, side_inputs=side_inputs)


@pytree_dataclass
class Add(Intervention):
    """Adds `value` to the activation (at `positions` only, if given).

    Attributes:
      value: A NamedArray (or scalar) broadcast by name against the
        activation, e.g. a steering vector over `embedding`.
      positions: None (every token) or an int32 array of absolute token
        positions.

    Example:
      >>> from saikei import interp, sk
      >>> x = sk.nx.zeros({"seq": 3, "embedding": 2})
      >>> out = interp.Add(sk.nx.ones({"embedding": 2}), positions=[1])(
      ...     x, token_positions=sk.nx.arange("seq", 3))
      >>> out.unwrap("seq", "embedding").tolist()
      [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    """

    value: Any
    positions: Any = None

    def __init__(self, value: Any, positions: Any = None):
        self.value = _as_value(value, "interp.Add")
        self.positions = _as_indices(positions, "interp.Add")

    def apply(self, value, *, layer, side_inputs):
        _check_fits(self.value, value, "interp.Add")
        mask = _position_mask(self.positions, value, side_inputs, "interp.Add")
        return _where(mask, value + self.value, value)


@pytree_dataclass
class Replace(Intervention):
    """Replaces the activation by `value` (at `positions` only, if given).

    Attributes:
      value: A NamedArray (or scalar) broadcast by name against the activation.
      positions: None (every token) or an int32 array of absolute token
        positions.

    Example:
      >>> from saikei import interp, sk
      >>> interp.Replace(5.0)(sk.nx.zeros({"seq": 2})).unwrap("seq").tolist()
      [5.0, 5.0]
    """

    value: Any
    positions: Any = None

    def __init__(self, value: Any, positions: Any = None):
        self.value = _as_value(value, "interp.Replace")
        self.positions = _as_indices(positions, "interp.Replace")

    def apply(self, value, *, layer, side_inputs):
        _check_fits(self.value, value, "interp.Replace")
        mask = _position_mask(self.positions, value, side_inputs, "interp.Replace")
        new = self.value.astype(value.dtype) + nx.zeros(value.named_shape, value.dtype)
        return _where(mask, new, value)


@pytree_dataclass
class Scale(Intervention):
    """Multiplies the activation by `by` (at `positions` only, if given).

    Attributes:
      by: A scalar or a NamedArray broadcast by name (e.g. over `heads`).
      positions: None (every token) or an int32 array of absolute token
        positions.

    Example:
      >>> from saikei import interp, sk
      >>> interp.Scale(0.5)(sk.nx.ones({"seq": 2})).unwrap("seq").tolist()
      [0.5, 0.5]
    """

    by: Any
    positions: Any = None

    def __init__(self, by: Any, positions: Any = None):
        self.by = _as_value(by, "interp.Scale")
        self.positions = _as_indices(positions, "interp.Scale")

    def apply(self, value, *, layer, side_inputs):
        _check_fits(self.by, value, "interp.Scale")
        mask = _position_mask(self.positions, value, side_inputs, "interp.Scale")
        return _where(mask, value * self.by, value)


@pytree_dataclass
class Ablate(Intervention):
    """Sets heads (or the whole activation) to zero or to their mean on a reference run.

    `mode="mean"` replaces the value by its mean over the reference run's
    batch axes and `seq` (every other axis, such as `heads` and
    `projection`, is kept), read from `reference[name]` for each hook point
    the intervention is placed at; `interp.intervene` does that and drops
    the reference. On `attn.k`/`attn.v` the heads are key/value heads.

    Attributes:
      heads: None (the whole activation) or an int32 array of head indices
        along `heads` (or `kv_heads`).
      mode: "zero" or "mean".
      positions: None (every token) or an int32 array of absolute positions.
      mean: The mean value per site, filled by `intervene` (mode "mean").
      reference: An `ActivationCache` (any mapping from hook names to values)
        of the reference run; None once placed.

    Example:
      >>> from saikei import interp, sk
      >>> z = sk.nx.ones({"seq": 2, "heads": 3, "projection": 1})
      >>> out = interp.Ablate(heads=[1])(z)
      >>> out.unwrap("heads", "seq", "projection")[:, 0, 0].tolist()
      [1.0, 0.0, 1.0]
    """

    heads: Any = None
    positions: Any = None
    mean: Any = None
    reference: Any = None
    mode: str = _static(default="zero")

    def __init__(
        self,
        heads: Any = None,
        mode: str = "zero",
        reference: Any = None,
        positions: Any = None,
        mean: Any = None,
    ):
        where = "interp.Ablate"
        if mode not in ("zero", "mean"):
            raise ValueError(f"{where}: mode must be 'zero' or 'mean', got {mode!r}.")
        if mode == "mean" and reference is None and mean is None:
            raise ValueError(
                f"{where}(mode='mean') needs reference=cache, the ActivationCache of a run whose"
                " mean to use (e.g. interp.run_with_cache(model, tokens)[1])."
            )
        if reference is not None and not isinstance(reference, Mapping):
            raise TypeError(
                f"{where}: reference must be an ActivationCache (a mapping from hook names to"
                f" values), got {type(reference).__name__}."
            )
        self.heads = None if heads is None else _as_indices(heads, where, "heads")
        self.mode = mode
        self.reference = reference
        self.positions = _as_indices(positions, where)
        self.mean = mean

    def for_site(self, names: Sequence[str], hook: HookPoint) -> Intervention:
        where = f"interp.Ablate at {names[0]!r}"
        if self.heads is not None and hook.user_head_axis is None:
            raise ValueError(
                f"{where}: heads= needs a per-head hook point (attn.q/k/v/scores/pattern/z/"
                "result), but this one has no head axis. Leave heads out to ablate it whole."
            )
        if self.mode != "mean" or self.reference is None:
            return self
        means = []
        for name in names:
            if name not in self.reference:
                raise KeyError(
                    f"{where}: the reference cache has no {name!r}; cache it, e.g."
                    f" run_with_cache(model, tokens, names=[{name!r}])."
                )
            ref = self.reference[name]
            reduce = [n for n in ref.named_shape if n not in _FEATURE_AXES]
            means.append(nx.nmap(jnp.mean)(ref.untag(*reduce)) if reduce else ref)
        if hook.layers is None:
            mean = means[0]
        else:
            by_layer = dict(zip(_layers_of(names), means))
            zero = jnp.zeros_like(means[0].data_array)
            filled = [
                by_layer.get(i, nx.NamedArray(zero, means[0].axis_names)) for i in hook.layers
            ]
            mean = nx.stack(filled, hook.stack_axis)
        return dataclasses.replace(self, mean=mean, reference=None)

    def apply(self, value, *, layer, side_inputs):
        where = "interp.Ablate"
        mask = _position_mask(self.positions, value, side_inputs, where)
        if self.heads is not None:
            axis = "heads" if "heads" in value.named_shape else "kv_heads"
            if axis not in value.named_shape:
                raise ValueError(f"{where}: heads= given, but the value has no head axis.")
            head_mask = nx.nmap(lambda i: jnp.isin(i, self.heads))(
                nx.arange(axis, value.named_shape[axis])
            )
            mask = head_mask if mask is True else mask & head_mask
        if self.mode == "zero":
            new = nx.zeros(value.named_shape, value.dtype)
        elif self.mean is None:
            raise ValueError(
                f"{where}(mode='mean') has no mean yet: place it with interp.intervene(model,"
                " {name: Ablate(..., reference=cache)}), which reads the mean from the cache."
            )
        else:
            _check_fits(self.mean, value, where)
            new = self.mean.astype(value.dtype) + nx.zeros(value.named_shape, value.dtype)
        return _where(mask, new, value)


@pytree_dataclass
class Hook(Intervention):
    """Applies a function `fn(value) -> new value` (same axes) to the activation.

    `fn` is part of the model's structure: a different function compiles
    anew; arrays it closes over are constants of the compiled program.

    Attributes:
      fn: A function from NamedArray to NamedArray.

    Example:
      >>> from saikei import interp, sk
      >>> interp.Hook(lambda x: -x)(sk.nx.ones({"seq": 2})).unwrap("seq").tolist()
      [-1.0, -1.0]
    """

    fn: Callable[[nx.NamedArray], nx.NamedArray] = _static()

    def __init__(self, fn: Callable[[nx.NamedArray], nx.NamedArray]):
        if not callable(fn):
            raise TypeError(f"interp.Hook: fn must be callable, got {fn!r}.")
        self.fn = fn

    def apply(self, value, *, layer, side_inputs):
        return self.fn(value)


def _layers_of(names: Sequence[str]) -> list[int]:
    return [int(name.split(".")[1]) for name in names]


@pytree_dataclass
class InterventionAt(nn.Layer):
    """An intervention placed at a hook point: converts head layouts and picks the blocks.

    `interp.intervene` builds these; users rarely make one by hand. Inside
    a LayerStack the same layer runs for every block, so it compares the
    block being run (`layer_index`, sliced by the stack) with `layers` and
    changes the value only there.

    Attributes:
      intervention: The `Intervention`.
      names: The hook names it acts at (one outside a LayerStack).
      layers: The block indices it acts in inside a LayerStack, else None.
      layer_index: The stack's per-layer block index (inside a LayerStack).
      head_axes: The hook point's internal head axes (see `HookPoint`).
      user_head_axis: `heads`, `kv_heads` or None.

    Example:
      >>> from saikei import interp, sk
      >>> from saikei.interp import _interventions
      >>> at = _interventions.InterventionAt(interp.Scale(3.0), names=("embed",))
      >>> at(sk.nx.ones({"seq": 1})).unwrap("seq").tolist()
      [3.0]
    """

    intervention: Intervention
    layer_index: Any = None
    names: tuple[str, ...] = _static(default=())
    layers: tuple[int, ...] | None = _static(default=None)
    head_axes: tuple[tuple[str, int], ...] = _static(default=())
    user_head_axis: str | None = _static(default=None)

    def _converter(self) -> HookPoint:
        return HookPoint(
            self.names[0] if self.names else "intervention",
            head_axes=self.head_axes,
            user_head_axis=self.user_head_axis,
        )

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        converter = self._converter()
        user = converter.to_user(value)
        layer: Any = self.layer_index
        if self.layers is None:
            layer = HookPoint(self.names[0]).current_layer() if self.names else None
        new = self.intervention.apply(user, layer=layer, side_inputs=side_inputs)
        if not nx.is_namedarray(new) or set(new.named_shape.items()) != set(
            user.named_shape.items()
        ):
            raise ValueError(
                f"interp: the intervention at {list(self.names)} returned"
                f" {getattr(new, 'named_shape', type(new).__name__)}, expected a NamedArray with"
                f" the activation's axes {user.named_shape}."
            )
        new = converter.from_user(new).astype(value.dtype).order_like(value)
        if self.layers is None:
            return new
        active = nx.nmap(lambda i: jnp.isin(i, jnp.asarray(self.layers)))(self.layer_index)
        return nx.nmap(jnp.where)(active, new, value).order_like(value)


@pytree_dataclass(has_implicitly_inherited_fields=True)
class InterventionSite(nn.Sequential):
    """A hook point followed by the interventions placed at it (`interp.intervene`).

    `sublayers[0]` is the hook point (it sees the value before any
    intervention); the rest are `InterventionAt` layers, applied in order.

    Example:
      >>> from saikei import interp, sk
      >>> from saikei.interp import _interventions
      >>> site = _interventions.InterventionSite([interp.HookPoint("embed"),
      ...     _interventions.InterventionAt(interp.Add(1.0), names=("embed",))])
      >>> site(sk.nx.zeros({"seq": 1})).unwrap("seq").tolist()
      [1.0]
    """


def _sites(model: Any) -> Any:
    return select(model).at_instances_of((InterventionSite, HookPoint))


def _hook_of(node: Any) -> HookPoint:
    return node.sublayers[0] if isinstance(node, InterventionSite) else node


def _prepare(model: Any) -> Any:
    if isinstance(model, model_parts.TransformerLM):
        return _hook_points.with_hook_points(model)
    return model


def _all_names(model: Any) -> list[str]:
    return [name for node in _sites(model).get_sequence() for name in _hook_of(node).names]


def _match(patterns: Sequence[str], names: Sequence[str], where: str) -> dict[str, str]:
    """Maps every matched hook name to the pattern that matched it."""
    matched: dict[str, str] = {}
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{where}: hook names must be str, got {pattern!r}.")
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            close = [n for n in names if pattern.split(".")[-1] in n][:6] or names[:6]
            raise KeyError(
                f"{where}: no hook point matches {pattern!r}. Names look like {close}; see"
                " interp.hook_names(model) (globs such as 'blocks.*.attn.z' work)."
            )
        for name in hits:
            if name in matched:
                raise ValueError(
                    f"{where}: the hook point {name!r} matches both {matched[name]!r} and"
                    f" {pattern!r}; give each hook point one intervention."
                )
            matched[name] = pattern
    return matched


def _without(placed: Sequence[InterventionAt], names: set[str]) -> list[InterventionAt]:
    """`placed` with `names` taken out (multi-block placements shrink)."""
    kept = []
    for at in placed:
        keep = tuple(n for n in at.names if n not in names)
        if not keep:
            continue
        if len(keep) == len(at.names):
            kept.append(at)
            continue
        layers = None if at.layers is None else tuple(_layers_of(keep))
        kept.append(dataclasses.replace(at, names=keep, layers=layers))
    return kept


def _place(hook: HookPoint, names: list[str], intervention: Intervention) -> InterventionAt:
    placed = intervention.for_site(names, hook)
    stacked = hook.layers is not None
    return InterventionAt(
        placed,
        layer_index=hook.layer_index if stacked else None,
        names=tuple(names),
        layers=tuple(_layers_of(names)) if stacked else None,
        head_axes=hook.head_axes,
        user_head_axis=hook.user_head_axis,
    )


def _rebuild(hook: HookPoint, placed: list[InterventionAt]) -> Any:
    return InterventionSite([hook, *placed]) if placed else hook


def intervene(model: Any, interventions: Mapping[str, Intervention]) -> Any:
    """Returns `model` with interventions placed at the named hook points.

    Args:
      model: A `TransformerLM` (hook points are inserted first if it has
        none), or any model holding `HookPoint`s (e.g. a
        `KVCachingTransformerLM` made from a hooked model).
      interventions: `{name_or_glob: intervention}`. A glob
        (`"blocks.*.attn.z"`) places the same intervention at every matching
        hook point; each hook point may be matched once. Inside a LayerStack,
        one intervention object placed at several blocks runs as one layer. A hook point that
        already has an intervention gets the new one in its place. Inside a
        LayerStack an intervention named for block `i` acts only in block `i`.

    Returns:
      The new model (the input is unchanged; parameters are shared).

    Raises:
      KeyError: for a name that matches no hook point.
      ValueError: for a hook point matched twice, or an intervention that
        does not fit its hook point.

    Example:
      >>> import jax
      >>> from saikei import interp, sk
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=2, embedding_dim=8,
      ...     projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2, vocab_size=11)
      >>> lm = interp.with_hook_points(gpt_neox.build_gpt_neox_transformer(cfg, jax.random.key(0)))
      >>> tokens = sk.nx.wrap(jax.numpy.arange(5), "seq")
      >>> ablated = interp.intervene(lm, {"blocks.*.attn.z": interp.Ablate(heads=[0])})
      >>> sorted(interp.interventions(ablated))
      ['blocks.0.attn.z', 'blocks.1.attn.z']
      >>> bool((ablated(tokens) != lm(tokens)).data_array.any())
      True
      >>> bool((interp.remove_interventions(ablated)(tokens) == lm(tokens)).data_array.all())
      True
    """
    where = "interp.intervene"
    if not isinstance(interventions, Mapping):
        raise TypeError(
            f"{where}: interventions must be a mapping {{hook name or glob: intervention}},"
            f" got {type(interventions).__name__}."
        )
    for pattern, intervention in interventions.items():
        if not isinstance(intervention, Intervention):
            raise TypeError(
                f"{where}: the value for {pattern!r} must be an interp intervention (Add,"
                f" Replace, Scale, Ablate, Hook), got {type(intervention).__name__}."
            )
    model = _prepare(model)
    matched = _match(list(interventions), _all_names(model), where)

    def update(node: Any) -> Any:
        hook = _hook_of(node)
        mine = [n for n in hook.names if n in matched]
        if not mine:
            return node
        placed = list(node.sublayers[1:]) if isinstance(node, InterventionSite) else []
        placed = _without(placed, set(mine))
        # One placement per intervention object: a LayerStack runs it once per layer.
        by_object: dict[int, tuple[Intervention, list[str]]] = {}
        for name in mine:
            intervention = interventions[matched[name]]
            by_object.setdefault(id(intervention), (intervention, []))[1].append(name)
        for intervention, names in by_object.values():
            placed.append(_place(hook, names, intervention))
        return _rebuild(hook, placed)

    return _sites(model).apply(update)


def interventions(model: Any) -> dict[str, Intervention]:
    """The interventions placed in `model`, as `{hook name: intervention}` in execution order.

    Example:
      >>> import jax
      >>> from saikei import interp
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
      ...     num_decoder_blocks=1, vocab_size=11, max_positions=8)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> interp.interventions(interp.intervene(lm, {"blocks.0.mlp_out": interp.Scale(0.0)}))
      {'blocks.0.mlp_out': Scale(by=..., positions=None)}
    """
    found: dict[str, Intervention] = {}
    for node in _sites(model).get_sequence():
        if isinstance(node, InterventionSite):
            for at in node.sublayers[1:]:
                for name in at.names:
                    found[name] = at.intervention
    order = {name: i for i, name in enumerate(_hook_points.hook_names(model))}
    return dict(sorted(found.items(), key=lambda item: order.get(item[0], len(order))))


def remove_interventions(model: Any, names: str | Sequence[str] | None = None) -> Any:
    """Returns `model` without the interventions at `names` (globs allowed; None: all).

    Example:
      >>> import jax
      >>> from saikei import interp
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=8)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> both = interp.intervene(lm, {"blocks.*.mlp_out": interp.Scale(0.0)})
      >>> list(interp.interventions(interp.remove_interventions(both, "blocks.0.*")))
      ['blocks.1.mlp_out']
    """
    patterns = [names] if isinstance(names, str) else None if names is None else list(names)

    def strip(node: Any) -> Any:
        if not isinstance(node, InterventionSite):
            return node
        hook = _hook_of(node)
        if patterns is None:
            return hook
        drop = {n for n in hook.names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        return _rebuild(hook, _without(list(node.sublayers[1:]), drop))

    return _sites(model).apply(strip)
