"""`run_with_cache`: a model's outputs and the activations at named hook points, as outputs.

The hook points asked for are replaced, for the duration of one traced call,
by recorders that write what they see into fresh StateVariables (with one
slice per layer inside a `LayerStack`, whose scan stacks them). The
variables are created and read inside one compiled function, so from the
outside `run_with_cache` is a pure function of the model and the tokens: it
compiles once per model structure, input shapes and name set, and works
under `jax.jit`, `jax.vmap` and `jax.grad`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from saikei import nn
from saikei.core import (
    AbstractVariableValue,
    ParameterValue,
    StateVariable,
    bind_variables,
    select,
    unbind_variables,
)
from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.interp._cache import ActivationCache, post_attention_norms
from saikei.models.transformer import model_parts
from saikei.models.transformer._hook_points import (
    HookPoint,
    NameFilter,
    hook_names,
    select_names,
    with_hook_points,
)
from saikei.nn._layer_stack_types import LAYERSTACK_AXES_METADATA_KEY, LayerStackVarBehavior

# Recording -------------------------------------------------------------------------------

# Filled by `_Probe` layers while the model is traced for shapes (see `_probe_shapes`).
_SHAPE_SINKS: list[dict[int, Any]] = []


@pytree_dataclass
class _Probe(nn.Layer):
    """Stands in for a hook point while shapes are found: notes the user-facing value's shape."""

    hook: Any
    key: int = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        user = self.hook.to_user(self.hook(value, **side_inputs))
        if not nx.is_namedarray(user) or user.positional_shape:
            raise ValueError(
                f"run_with_cache: the value at {self.hook.name!r} must be a NamedArray with"
                f" only named axes, got {getattr(user, 'named_shape', type(user).__name__)}."
            )
        _SHAPE_SINKS[-1][self.key] = (dict(user.named_shape), user.dtype)
        return value


@pytree_dataclass
class _Recorder(nn.Layer):
    """Stands in for a hook point during `run_with_cache`: writes the user-facing value to `slot`."""

    hook: Any
    slot: StateVariable

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        value = self.hook(value, **side_inputs)
        self.slot.value = self.hook.to_user(value).order_like(self.slot.value)
        return value


@pytree_dataclass
class _NormScaleRecorder(nn.Layer):
    """Runs the final norm and writes the factor it divides by (per position) to `slot`."""

    norm: Any
    slot: StateVariable

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        standardize = self.norm.sublayers[0]
        across = standardize.across
        across = (across,) if isinstance(across, str) else tuple(across)
        x = value.astype(jnp.promote_types(value.dtype, jnp.float32))
        if isinstance(standardize, nn.Standardize):
            x = x - nx.nmap(jnp.mean)(x.untag(*across))
        mean_square = nx.nmap(lambda a: jnp.mean(jnp.square(a)))(x.untag(*across))
        self.slot.value = nx.nmap(jax.lax.rsqrt)(mean_square + standardize.epsilon).order_like(
            self.slot.value
        )
        return self.norm(value, **side_inputs)


def _final_norm_index(body: Any) -> int:
    layers = body.sublayers
    for i, layer in enumerate(layers):
        if isinstance(layer, HookPoint) and layer.name == "final_norm" and i > 0:
            norm = layers[i - 1]
            if isinstance(norm, nn.LayerNorm | nn.RMSLayerNorm):
                return i - 1
    raise ValueError(
        "run_with_cache: cannot find the final norm (a LayerNorm or RMSLayerNorm before the"
        " 'final_norm' hook point) in the model body."
    )


def _stack_of(hook: HookPoint) -> dict[Any, int]:
    return {} if hook.layers is None else {hook.stack_axis: len(hook.layers)}


def _probe_shapes(model: Any, targets: dict[Any, HookPoint], tokens: Any, side: dict) -> dict:
    paths = list(targets)
    probed = (
        select(model)
        .at_keypaths(paths)
        .set_by_path({path: _Probe(targets[path], i) for i, path in enumerate(paths)})
    )
    _SHAPE_SINKS.append({})
    try:
        jax.eval_shape(lambda m, t, s: m(t, **s), probed, tokens, side)
        found = _SHAPE_SINKS[-1]
    finally:
        _SHAPE_SINKS.pop()
    return {paths[i]: found[i] for i in range(len(paths))}


def _per_layer(value: nx.NamedArray, hook: HookPoint, names: set[str]) -> list[tuple[str, Any]]:
    if hook.layers is None:
        return [(hook.name, value)] if hook.name in names else []
    out = []
    sliced = value.untag(hook.stack_axis)
    for s, name in enumerate(hook.names):
        if name in names:
            out.append((name, nx.nmap(lambda a, s=s: a[s])(sliced)))
    return out


def _model_facts(model: Any) -> dict[str, Any]:
    """Static facts about the model that cache methods need."""
    attention = (nn.Attention, nn.KVCachingAttention)
    norms = (nn.LayerNorm, nn.RMSLayerNorm)

    def norm_after_attention(node: Any) -> bool:
        layers = getattr(node, "sublayers", None)
        if not isinstance(node, nn.Sequential) or not layers:
            return False
        at = [i for i, x in enumerate(layers) if isinstance(x, attention)]
        return bool(at) and any(isinstance(x, norms) for x in layers[at[0] + 1 :])

    post_norm = select(model).at_subtrees_where(norm_after_attention).count() > 0
    has_pos_embed = any(
        h.name == "pos_embed" for h in select(model).at_instances_of(HookPoint).get_sequence()
    )
    return {"attn_post_norm": post_norm, "has_pos_embed": has_pos_embed}


def _run_impl(tree: Any, values: tuple, tokens: Any, side: dict, wanted: tuple[str, ...]) -> Any:
    model = bind_variables(tree, values)
    index = _final_norm_index(model.body)
    names = set(wanted)
    found = select(model).at_instances_of(HookPoint).get_by_path()
    targets = {path: hook for path, hook in found.items() if names & set(hook.names)}
    shapes = _probe_shapes(model, targets, tokens, side)
    slots = {}
    for path, hook in targets.items():
        shape, dtype = shapes[path]
        stack = _stack_of(hook)
        metadata = {}
        if stack:
            metadata = {
                LAYERSTACK_AXES_METADATA_KEY: {hook.stack_axis: LayerStackVarBehavior.PER_LAYER}
            }
        slots[path] = StateVariable(
            nx.zeros({**stack, **shape}, dtype),
            label=f"run_with_cache/{len(slots)}:{hook.name}",
            metadata=metadata,
        )
    recording = (
        select(model)
        .at_keypaths(list(targets))
        .set_by_path({path: _Recorder(targets[path], slots[path]) for path in targets})
    )
    body = recording.body
    norm = body.sublayers[index]
    batch_shape = {n: s for n, s in tokens.named_shape.items()}
    scale_slot = StateVariable(nx.zeros(batch_shape, jnp.float32), label="run_with_cache/scale")
    layers = list(body.sublayers)
    layers[index] = _NormScaleRecorder(norm, scale_slot)
    recording = type(recording).from_attributes(
        **{
            **recording.attributes_dict(),
            "body": type(body).from_attributes(**{**body.attributes_dict(), "sublayers": layers}),
        }
    )
    logits = recording(tokens, **side)
    entries = dict(
        entry
        for path, hook in targets.items()
        for entry in _per_layer(slots[path].value, hook, names)
    )
    ordered = tuple(n for n in wanted if n in entries)
    cache = ActivationCache(
        names=ordered,
        values=tuple(entries[n] for n in ordered),
        final_norm_scale=scale_slot.value,
        final_norm_affine=list(norm.sublayers[1:]),
        final_norm_centers=isinstance(norm, nn.LayerNorm),
        num_layers=sum(1 for n in hook_names(model) if n.endswith(".resid_pre")),
        attn_post_norms=post_attention_norms(model),
        **_model_facts(model),
    )
    return logits, cache


_run_jit = jax.jit(_run_impl, static_argnames=("wanted",))


def run_with_cache(
    model: model_parts.TransformerLM,
    tokens: nx.NamedArray,
    names: NameFilter = None,
    **side_inputs: Any,
) -> tuple[nx.NamedArray, ActivationCache]:
    """Runs `model` on `tokens` and returns its logits and the activations at hook points.

    Pure: the activations are outputs, nothing is stored in the model. The
    call is compiled once per model structure, input shapes and set of
    names, and works inside `jax.jit`, `jax.vmap` and `jax.grad`. Hook points
    inside a `LayerStack` are recorded per layer by the scan itself, and
    come back under their per-block names.

    Args:
      model: A `TransformerLM`; the standard hook points are inserted first
        if it has none (`with_hook_points`).
      tokens: Token ids with a `seq` axis (and any batch axes).
      names: Which hook points to keep: None for all but
        `blocks.*.attn.result` (which costs a `heads x embedding` value per
        token and is computed only when asked for), a name, a glob such as
        `"blocks.*.attn.pattern"`, a site name such as `"resid_pre"` (every
        block's), a list of these, or a predicate on names.
      **side_inputs: Passed to the model, e.g. `token_positions` (named
        `seq`, -1 for padding).

    Returns:
      `(logits, cache)`: the model's output and an `ActivationCache` mapping
      each recorded name to its value (axes in the `saikei.interp` table).

    Raises:
      ValueError: for a name that matches no hook point, or a model holding
        StateVariables (use `generate(..., capture=...)` for cached decoding).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> tokens = sk.nx.wrap(jax.numpy.array([[1, 2, 3]]), "batch", "seq")
      >>> logits, cache = sk.interp.run_with_cache(lm, tokens, "blocks.*.attn.pattern")
      >>> list(cache)
      ['blocks.0.attn.pattern', 'blocks.1.attn.pattern']
      >>> cache["blocks.1.attn.pattern"].named_shape
      {'batch': 1, 'heads': 2, 'seq': 3, 'kv_seq': 3}
    """
    where = "run_with_cache"
    if not isinstance(model, model_parts.TransformerLM):
        raise TypeError(
            f"{where}: expected a TransformerLM, got {type(model).__name__}. For cached decoding"
            " use generate(..., capture=names)."
        )
    if not nx.is_namedarray(tokens) or "seq" not in tokens.named_shape:
        shape = getattr(tokens, "named_shape", getattr(tokens, "shape", None))
        raise ValueError(
            f"{where}: tokens must be a NamedArray with a 'seq' axis, got"
            f" {type(tokens).__name__} with shape {shape}. Wrap them, e.g."
            " sk.nx.wrap(ids, 'batch', 'seq')."
        )
    model = with_hook_points(model)
    wanted = tuple(select_names(hook_names(model), names, where))
    tree, variables = unbind_variables(model, freeze=True)
    state = [v for v in variables if not _is_parameter_value(v)]
    if state:
        raise ValueError(
            f"{where}: the model holds StateVariables {[v.label for v in state]}; run_with_cache"
            " runs a model without state. Freeze them (sk.freeze_variables) or remove them; for"
            " cached decoding use generate(..., capture=names)."
        )
    if side_inputs.get("token_positions") is None:
        side_inputs["token_positions"] = nx.arange("seq", tokens.named_shape["seq"])
    return _run_jit(tree, tuple(variables), tokens, side_inputs, wanted=wanted)


def _is_parameter_value(value: AbstractVariableValue) -> bool:
    return isinstance(value, ParameterValue)
