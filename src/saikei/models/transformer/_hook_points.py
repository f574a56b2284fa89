"""Named hook points in transformer language models.

`HookPoint(name)` is an identity layer that marks a place in a model by name.
`with_hook_points(lm)` inserts the standard set into a `TransformerLM` of any
family saikei builds (llama-like, GPT-NeoX, GPT-2; blocks listed or in a
`LayerStack`), and `hook_names(lm)` lists the names in execution order.
`saikei.interp` re-exports all three and builds caching, interventions and
patching on them; they live here, below `interp`, so that
`load_pretrained(..., hook_points=True)` can insert them.

A hook point inside a `LayerStack` stands for every layer of the stack: its
`name` holds the placeholder `{layer}` (e.g. `"blocks.{layer}.resid_pre"`),
`layers` lists the block index of each slice of the stack, and `layer_index`
is an int32 NamedArray with the stack axis holding those indices. The stack
slices `layer_index` like any other stacked array, so while layer `i` runs,
the hook point (and anything put next to it) sees `layer_index` as the
0-d value `i`: see `HookPoint.current_layer`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp

from saikei import nn
from saikei.core import named_axes as nx
from saikei.core import select
from saikei.core._struct import pytree_dataclass
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import gpt2

LAYER_PLACEHOLDER = "{layer}"
"""What stands for the block index in the name of a hook point inside a LayerStack."""


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


@pytree_dataclass
class HookPoint(nn.Layer):
    """An identity layer that marks a named place in a model.

    Calling it returns its argument unchanged. Tools find hook points by name
    (`saikei.interp.run_with_cache`, `saikei.interp.intervene`) and put their
    own layers there; the model itself never depends on them.

    Attributes:
      name: The hook point's name, e.g. `"blocks.3.attn.pattern"`. Inside a
        `LayerStack` the block index is the placeholder `{layer}`.
      layer_index: None outside a LayerStack; inside one, an int32 NamedArray
        over `stack_axis` with the block index of each layer (the stack
        slices it, so each layer sees its own index).
      layers: The block indices along the stack (None outside a stack).
      stack_axis: The LayerStack's axis (None outside a stack).
      head_axes: The model's head axes in the value (names and sizes, in the
        order that flattens to Hugging Face head order), merged into one
        `user_head_axis` for users; empty for values without heads.
      user_head_axis: `"heads"` for per-query-head values, `"kv_heads"` for
        keys and values, None for values without heads.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei.models.transformer import _hook_points
      >>> hook = _hook_points.HookPoint("blocks.0.resid_pre")
      >>> hook(jnp.ones(2)), hook.names
      (Array([1., 1.], dtype=float32), ('blocks.0.resid_pre',))
    """

    name: str = _static()
    layer_index: Any = None
    layers: tuple[int, ...] | None = _static(default=None)
    stack_axis: Any = _static(default=None)
    head_axes: tuple[tuple[str, int], ...] = _static(default=())
    user_head_axis: str | None = _static(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"HookPoint: name must be a non-empty str, got {self.name!r}.")
        stacked = LAYER_PLACEHOLDER in self.name
        if stacked != (self.layers is not None):
            raise ValueError(
                f"HookPoint({self.name!r}): a name with the placeholder {LAYER_PLACEHOLDER}"
                " needs `layers` (the block index of each stack slice), and only such a name"
                f" may have them; got layers={self.layers!r}."
            )

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return value

    @property
    def names(self) -> tuple[str, ...]:
        """The full names this hook point stands for (one per layer inside a LayerStack).

        Example:
          >>> from saikei.models.transformer import _hook_points
          >>> _hook_points.HookPoint("blocks.{layer}.mlp_out", layers=(0, 1)).names
          ('blocks.0.mlp_out', 'blocks.1.mlp_out')
        """
        if self.layers is None:
            return (self.name,)
        return tuple(self.name.replace(LAYER_PLACEHOLDER, str(i)) for i in self.layers)

    @property
    def site(self) -> str:
        """The name without its `blocks.{i}.` prefix, e.g. `"attn.pattern"`.

        Example:
          >>> from saikei.models.transformer import _hook_points
          >>> _hook_points.HookPoint("blocks.2.attn.q").site
          'attn.q'
        """
        parts = self.name.split(".", 2)
        return parts[2] if parts[0] == "blocks" and len(parts) == 3 else self.name

    def current_layer(self) -> Any:
        """The block index this hook point runs in: an int, a traced scalar, or None.

        Outside a LayerStack it is the index in the name (None for hook points
        outside blocks, such as `embed`). Inside a LayerStack, while the stack
        runs, it is the int32 scalar that the stack sliced out of
        `layer_index` for the current layer (a tracer: compare it with
        `jnp.where`, not `if`).

        Example:
          >>> from saikei.models.transformer import _hook_points
          >>> _hook_points.HookPoint("blocks.5.resid_post").current_layer()
          5
        """
        if self.layers is None:
            parts = self.name.split(".")
            if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
                return int(parts[1])
            return None
        index = self.layer_index
        if nx.is_namedarray(index):
            if index.named_shape:
                raise ValueError(
                    f"HookPoint({self.name!r}).current_layer(): the layer index still has the"
                    f" stack axis {index.named_shape}; it is a single index only while the"
                    " LayerStack runs this layer."
                )
            return index.unwrap()
        return index

    def to_user(self, value: Any) -> Any:
        """The value as users see it: the model's head axes merged into `heads` or `kv_heads`.

        Query heads of a grouped-query model (`head_groups` x `query_heads`)
        become one `heads` axis in Hugging Face order (head `h` belongs to
        key/value group `h // query_heads`); keys and values get a `kv_heads`
        axis (of size 1 for multi-query attention). Other values pass
        unchanged.

        Example:
          >>> from saikei import sk
          >>> from saikei.models.transformer import _hook_points
          >>> hook = _hook_points.HookPoint("blocks.0.attn.q",
          ...     head_axes=(("head_groups", 2), ("query_heads", 3)), user_head_axis="heads")
          >>> value = sk.nx.zeros({"head_groups": 2, "query_heads": 3, "seq": 4})
          >>> hook.to_user(value).named_shape
          {'heads': 6, 'seq': 4}
        """
        if self.user_head_axis is None or not nx.is_namedarray(value):
            return value
        names = tuple(name for name, _ in self.head_axes)
        if names == (self.user_head_axis,):
            return value
        if not names:
            return value.broadcast_to((), {**value.named_shape, self.user_head_axis: 1})
        merged = nx.nmap(lambda a: a.reshape(-1))(value.untag(*names)).tag(self.user_head_axis)
        # The merged axis takes the place of the first head axis.
        order = [
            self.user_head_axis if n == names[0] else n
            for n in value.named_shape
            if n == names[0] or n not in names
        ]
        return merged.order_as(*order)

    def from_user(self, value: Any) -> Any:
        """The inverse of `to_user`: splits `heads`/`kv_heads` back into the model's head axes.

        Example:
          >>> from saikei import sk
          >>> from saikei.models.transformer import _hook_points
          >>> hook = _hook_points.HookPoint("blocks.0.attn.q",
          ...     head_axes=(("head_groups", 2), ("query_heads", 3)), user_head_axis="heads")
          >>> hook.from_user(sk.nx.zeros({"seq": 4, "heads": 6})).named_shape
          {'seq': 4, 'head_groups': 2, 'query_heads': 3}
        """
        if self.user_head_axis is None or not nx.is_namedarray(value):
            return value
        names = tuple(name for name, _ in self.head_axes)
        if names == (self.user_head_axis,) or self.user_head_axis not in value.named_shape:
            return value
        if not names:
            return nx.nmap(lambda a: a[0])(value.untag(self.user_head_axis))
        sizes = tuple(size for _, size in self.head_axes)
        split = nx.nmap(lambda a: a.reshape(sizes))(value.untag(self.user_head_axis))
        return split.tag(*names)


@pytree_dataclass
class HeadResultSite(nn.Layer):
    """An attention output projection that can expose each head's output (`attn.result`).

    With a plain `HookPoint` as `hook` it is just `projection`. When a tool
    replaces the hook point (to record or change the per-head outputs), the
    projection runs per head, without summing over heads, the hook sees
    those per-head outputs in the embedding space, and their sum (plus the
    projection's bias, if any) is the output. So the per-head outputs cost
    nothing unless asked for.

    Attributes:
      projection: The output projection, an `nn.Linear` or `nn.Affine`.
      hook: The `attn.result` hook point (or what a tool put in its place).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import _hook_points
      >>> proj = sk.nn.Linear.from_config("o", jax.random.key(0),
      ...     {"heads": 2, "projection": 3}, {"embedding": 4})
      >>> site = _hook_points.HeadResultSite(proj, _hook_points.HookPoint("blocks.0.attn.result"))
      >>> z = sk.nx.ones({"heads": 2, "seq": 5, "projection": 3})
      >>> site(z).named_shape
      {'seq': 5, 'embedding': 4}
    """

    projection: Any
    hook: Any

    def _parts(self) -> tuple[nn.Linear, list[Any]]:
        proj = self.projection
        if isinstance(proj, nn.Linear):
            return proj, []
        if (
            isinstance(proj, nn.Affine)
            and proj.sublayers
            and isinstance(proj.sublayers[0], nn.Linear)
        ):
            return proj.sublayers[0], list(proj.sublayers[1:])
        raise TypeError(
            "HeadResultSite: the output projection must be an sk.nn.Linear or sk.nn.Affine to"
            f" split it by head, got {type(proj).__name__}."
        )

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        if type(self.hook) is HookPoint:
            return self.projection(value, **side_inputs)
        linear, rest = self._parts()
        head_names = tuple(n for n in linear.in_axis_names if n != "projection")
        weights = linear.weights.value
        per_head = nn.contract("projection", value, weights)
        per_head = self.hook(per_head, **side_inputs)
        out = per_head.untag(*head_names)
        out = nx.nmap(lambda a: a.reshape(-1, *a.shape[len(head_names) :]).sum(axis=0))(out)
        for layer in rest:
            out = layer(out, **side_inputs)
        return out


@pytree_dataclass
class PositionEmbeddingSite(nn.Layer):
    """GPT-2's position embeddings with a hook point on them (`pos_embed`).

    Returns `value + hook(positions)`, where `positions` are the learned
    embeddings of each token's position, exactly as `add` would add them.

    Attributes:
      add: The model's `AddPositionEmbeddings` layer.
      hook: The `pos_embed` hook point.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import _hook_points
      >>> from saikei.models.transformer.variants import gpt2
      >>> table = sk.nn.EmbeddingTable.from_config("wpe", jax.random.key(0), 8,
      ...     {"embedding": 4}, vocabulary_axis="positions")
      >>> site = _hook_points.PositionEmbeddingSite(gpt2.AddPositionEmbeddings(table),
      ...     _hook_points.HookPoint("pos_embed"))
      >>> x = sk.nx.zeros({"seq": 3, "embedding": 4})
      >>> site(x, token_positions=sk.nx.arange("seq", 3)).named_shape
      {'seq': 3, 'embedding': 4}
    """

    add: Any
    hook: Any

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        # Adding to zeros is exact, so value + embeddings is what `add` computes.
        embeddings = self.add(nx.zeros(value.named_shape, value.dtype), **side_inputs)
        return value + self.hook(embeddings, **side_inputs)


# Insertion -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where a block sits: its index, or its indices along a LayerStack."""

    index: int | None = None
    layers: tuple[int, ...] | None = None
    stack_axis: Any = None

    def hook(self, site: str, **kwargs: Any) -> HookPoint:
        if self.layers is None:
            return HookPoint(f"blocks.{self.index}.{site}", **kwargs)
        return HookPoint(
            f"blocks.{LAYER_PLACEHOLDER}.{site}",
            layer_index=nx.wrap(jnp.asarray(self.layers, jnp.int32), self.stack_axis),
            layers=self.layers,
            stack_axis=self.stack_axis,
            **kwargs,
        )


def _error(where: str, what: str) -> ValueError:
    return ValueError(
        f"with_hook_points: {what} ({where}). Hook points can be inserted into the models"
        " saikei builds or loads (llama-like, GPT-NeoX, GPT-2); this one differs from their"
        " structure, so insert `HookPoint`s where you need them with `sk.select(...)`."
    )


def _with_sublayers(group: Any, sublayers: list[Any]) -> Any:
    return type(group).from_attributes(**{**group.attributes_dict(), "sublayers": sublayers})


def _insert_before_last_of(layers: list[Any], kind: type, hook: HookPoint) -> list[Any]:
    if layers and isinstance(layers[-1], kind):
        return [*layers[:-1], hook, layers[-1]]
    return [*layers, hook]


def _hook_attention(att: nn.Attention, at: _Where, metadata: Any) -> nn.Attention:
    where = f"attention of block {at.index if at.layers is None else at.layers}"
    q_heads = (*metadata.common_head_axes.items(), *metadata.query_only_head_axes.items())
    kv_heads = tuple(metadata.common_head_axes.items())
    query_heads = {"head_axes": tuple(q_heads), "user_head_axis": "heads"}
    key_heads = {"head_axes": kv_heads, "user_head_axis": "kv_heads"}
    for field in ("input_to_query", "input_to_key", "input_to_value"):
        if not isinstance(getattr(att, field), nn.Sequential):
            raise _error(where, f"its {field} is not a Sequential")
    q = _insert_before_last_of(
        list(att.input_to_query.sublayers), nn.ConstantRescale, at.hook("attn.q", **query_heads)
    )
    k = _insert_before_last_of(
        list(att.input_to_key.sublayers), nn.RenameAxes, at.hook("attn.k", **key_heads)
    )
    v = _insert_before_last_of(
        list(att.input_to_value.sublayers), nn.RenameAxes, at.hook("attn.v", **key_heads)
    )
    scores = att.query_key_to_attn
    softmax = [
        i
        for i, layer in enumerate(getattr(scores, "sublayers", ()))
        if isinstance(layer, nn.Softmax)
    ]
    if not isinstance(scores, nn.Sequential) or len(softmax) != 1:
        raise _error(where, "its query_key_to_attn is not a Sequential with one Softmax")
    s = list(scores.sublayers)
    i = softmax[0]
    s = [
        *s[:i],
        at.hook("attn.scores", **query_heads),
        s[i],
        at.hook("attn.pattern", **query_heads),
        *s[i + 1 :],
    ]
    out = att.attn_value_to_output
    if (
        not isinstance(out, nn.Sequential)
        or len(out.sublayers) != 2
        or not isinstance(out.sublayers[0], nn.NamedEinsum)
    ):
        raise _error(where, "its attn_value_to_output is not [NamedEinsum, output projection]")
    mix, projection = out.sublayers
    o = [
        mix,
        at.hook("attn.z", **query_heads),
        HeadResultSite(projection, at.hook("attn.result", **query_heads)),
    ]
    return dataclasses.replace(
        att,
        input_to_query=_with_sublayers(att.input_to_query, q),
        input_to_key=_with_sublayers(att.input_to_key, k),
        input_to_value=_with_sublayers(att.input_to_value, v),
        query_key_to_attn=_with_sublayers(scores, s),
        attn_value_to_output=_with_sublayers(out, o),
    )


def _hook_feed_forward(ffw: model_parts.TransformerFeedForward, at: _Where) -> Any:
    where = f"feed-forward of block {at.index if at.layers is None else at.layers}"
    layers = list(ffw.sublayers)
    if layers and isinstance(layers[0], nn.BranchAndMultiplyTogether):
        gated = layers[0]
        gate = gated.branches[0] if gated.branches else None
        if not isinstance(gate, nn.NamedGroup | nn.Sequential) or len(gate.sublayers) != 2:
            raise _error(where, "its gate is not a group of [projection, activation]")
        gate = _with_sublayers(gate, [gate.sublayers[0], at.hook("mlp.pre"), gate.sublayers[1]])
        gated = dataclasses.replace(gated, branches=[gate, *gated.branches[1:]])
        layers = [gated, at.hook("mlp.post"), *layers[1:]]
    elif len(layers) == 3 and isinstance(layers[1], nn.Elementwise):
        layers = [layers[0], at.hook("mlp.pre"), layers[1], at.hook("mlp.post"), layers[2]]
    else:
        raise _error(where, "it is neither a gated nor a plain two-layer MLP")
    return _with_sublayers(ffw, layers)


def _hook_branch(branch: Any, at: _Where, metadata: Any) -> tuple[str, Any]:
    """Hooks one residual branch (attention or MLP); returns its kind and the new branch."""
    if not isinstance(branch, nn.Sequential):
        raise _error(f"block {at.index}", "a residual branch is not a Sequential")
    kinds = []
    layers = []
    for layer in branch.sublayers:
        if isinstance(layer, nn.Attention):
            kinds.append("attn")
            layer = _hook_attention(layer, at, metadata)
        elif isinstance(layer, model_parts.TransformerFeedForward):
            kinds.append("mlp")
            layer = _hook_feed_forward(layer, at)
        layers.append(layer)
    if len(kinds) != 1:
        raise _error(
            f"block {at.index}", "a residual branch holds no single Attention or feed-forward"
        )
    layers.append(at.hook(f"{kinds[0]}_out"))
    return kinds[0], _with_sublayers(branch, layers)


def _hook_block(block: Any, at: _Where, metadata: Any) -> Any:
    if not isinstance(block, model_parts.TransformerBlock):
        raise _error(f"block {at.index}", f"found {type(block).__name__}, not a TransformerBlock")
    parts = list(block.sublayers)
    if len(parts) == 2 and all(isinstance(p, nn.Residual) for p in parts):
        (kind_a, attn), (kind_m, mlp) = (_hook_branch(p.delta, at, metadata) for p in parts)
        if (kind_a, kind_m) != ("attn", "mlp"):
            raise _error(f"block {at.index}", "the residuals are not attention, then MLP")
        layers = [
            at.hook("resid_pre"),
            nn.Residual(attn),
            at.hook("resid_mid"),
            nn.Residual(mlp),
            at.hook("resid_post"),
        ]
    elif (
        len(parts) == 1
        and isinstance(parts[0], nn.Residual)
        and isinstance(parts[0].delta, nn.BranchAndAddTogether)
        and len(parts[0].delta.branches) == 2
    ):
        branches = [_hook_branch(b, at, metadata) for b in parts[0].delta.branches]
        if [kind for kind, _ in branches] != ["attn", "mlp"]:
            raise _error(f"block {at.index}", "the parallel branches are not attention and MLP")
        parallel = nn.BranchAndAddTogether([b for _, b in branches])
        layers = [at.hook("resid_pre"), nn.Residual(parallel), at.hook("resid_post")]
    else:
        raise _error(f"block {at.index}", "its layers are not attention and MLP residuals")
    return _with_sublayers(block, layers)


def _hook_stack(stack: nn.LayerStack, first: int, metadata: Any) -> tuple[nn.LayerStack, int]:
    proto = stack.stacked_sublayers
    steps = stack.stack_axis_size
    if isinstance(proto, model_parts.TransformerBlock):
        at = _Where(layers=tuple(range(first, first + steps)), stack_axis=stack.stack_axis)
        return dataclasses.replace(stack, stacked_sublayers=_hook_block(proto, at, metadata)), steps
    if type(proto) is nn.Sequential and all(
        isinstance(b, model_parts.TransformerBlock) for b in proto.sublayers
    ):
        period = len(proto.sublayers)
        blocks = [
            _hook_block(
                b,
                _Where(
                    layers=tuple(first + s * period + j for s in range(steps)),
                    stack_axis=stack.stack_axis,
                ),
                metadata,
            )
            for j, b in enumerate(proto.sublayers)
        ]
        return dataclasses.replace(stack, stacked_sublayers=nn.Sequential(blocks)), steps * period
    raise _error("LayerStack", "its layer is neither a TransformerBlock nor a Sequential of them")


def has_hook_points(lm: Any) -> bool:
    """Whether `lm` already has the standard hook points (an `embed` hook point in its body).

    Example:
      >>> import jax
      >>> from saikei.models.transformer import _hook_points
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> _hook_points.has_hook_points(lm), _hook_points.has_hook_points(
      ...     _hook_points.with_hook_points(lm))
      (False, True)
    """
    body = getattr(lm, "body", None)
    # Searched at any depth: a tool may have wrapped the hook point (e.g. an intervention).
    return any(
        hook.name == "embed" for hook in select(body).at_instances_of(HookPoint).get_sequence()
    )


def with_hook_points(lm: model_parts.TransformerLM) -> model_parts.TransformerLM:
    """Returns `lm` with the standard hook points inserted (unchanged if it has them).

    The names, with `i` the block index (see `hook_names` for a model's own
    list): `embed` (token embeddings, after Gemma's scaling), `pos_embed`
    (GPT-2's position embeddings), `blocks.{i}.resid_pre`,
    `blocks.{i}.resid_mid` (sequential blocks only), `blocks.{i}.resid_post`,
    `blocks.{i}.attn.q|k|v` (after RoPE and query/key norms, before the query
    scaling), `blocks.{i}.attn.scores` (masked, pre-softmax, after soft
    caps), `blocks.{i}.attn.pattern`, `blocks.{i}.attn.z` (per-head mixed
    values), `blocks.{i}.attn.result` (per-head output in the embedding
    space, computed only when a tool replaces its hook point),
    `blocks.{i}.attn_out` and `blocks.{i}.mlp_out` (exactly what is added to
    the residual stream, after Gemma's post-norms), `blocks.{i}.mlp.pre`
    (the activation's input), `blocks.{i}.mlp.post` (the input of the output
    projection: activation times gate for gated MLPs), `final_norm` (the
    normalized residual entering the unembedding) and `logits`.

    The hook points do not change what the model computes; the parameters
    are shared with `lm`.

    Args:
      lm: A `TransformerLM` built by `build_llamalike_transformer`,
        `build_gpt_neox_transformer` or `build_gpt2_transformer`, or loaded.

    Returns:
      The model with hook points.

    Raises:
      TypeError: if `lm` is not a `TransformerLM`.
      ValueError: if its structure is not one saikei builds.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import _hook_points
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> hooked = _hook_points.with_hook_points(lm)
      >>> tokens = sk.nx.wrap(jax.numpy.arange(4), "seq")
      >>> bool((hooked(tokens) == lm(tokens)).data_array.all())
      True
      >>> _hook_points.with_hook_points(hooked) is hooked
      True
    """
    if not isinstance(lm, model_parts.TransformerLM):
        raise TypeError(
            f"with_hook_points: expected a TransformerLM, got {type(lm).__name__}. Insert hook"
            " points before converting a model for cached decoding."
        )
    if has_hook_points(lm):
        return lm
    body = lm.body
    if not isinstance(body, nn.Sequential):
        raise _error("body", f"the body is a {type(body).__name__}, not a Sequential")
    layers = list(body.sublayers)
    is_blocks = [isinstance(x, model_parts.TransformerBlock | nn.LayerStack) for x in layers]
    if any(is_blocks):
        first = is_blocks.index(True)
        last = len(is_blocks) - 1 - is_blocks[::-1].index(True)
    else:
        norms = [i for i, x in enumerate(layers) if isinstance(x, nn.LayerNorm | nn.RMSLayerNorm)]
        first = norms[0] if norms else len(layers)
        last = first - 1
    prefix, blocks, suffix = layers[:first], layers[first : last + 1], layers[last + 1 :]
    if not prefix or not isinstance(prefix[0], nn.EmbeddingLookup):
        raise _error("body", "it does not start with an embedding lookup")
    positions = [i for i, x in enumerate(prefix) if isinstance(x, gpt2.AddPositionEmbeddings)]
    if positions:
        p = positions[0]
        prefix = [
            *prefix[:p],
            HookPoint("embed"),
            PositionEmbeddingSite(prefix[p], HookPoint("pos_embed")),
            *prefix[p + 1 :],
        ]
    else:
        prefix = [*prefix, HookPoint("embed")]

    hooked_blocks = []
    index = 0
    for block in blocks:
        if isinstance(block, nn.LayerStack):
            stack, count = _hook_stack(block, index, lm.metadata)
            hooked_blocks.append(stack)
            index += count
        elif isinstance(block, model_parts.TransformerBlock):
            hooked_blocks.append(_hook_block(block, _Where(index=index), lm.metadata))
            index += 1
        else:
            raise _error(
                f"body layer {layers.index(block)}", f"{type(block).__name__} between blocks"
            )

    if not suffix or not isinstance(suffix[0], nn.LayerNorm | nn.RMSLayerNorm):
        raise _error("body", "the blocks are not followed by a final norm")
    suffix = [suffix[0], HookPoint("final_norm"), *suffix[1:], HookPoint("logits")]
    return dataclasses.replace(lm, body=_with_sublayers(body, [*prefix, *hooked_blocks, *suffix]))


def hook_names(lm: Any) -> list[str]:
    """The names of the hook points in `lm`, in the order the model runs them.

    A hook point inside a `LayerStack` stands for each layer of the stack:
    its names come layer by layer, in the order the stack runs.

    Example:
      >>> import jax
      >>> from saikei.models.transformer import _hook_points
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=2, embedding_dim=8,
      ...     projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2, vocab_size=11,
      ...     use_layer_stack=True)
      >>> lm = _hook_points.with_hook_points(
      ...     gpt_neox.build_gpt_neox_transformer(cfg, jax.random.key(0)))
      >>> names = _hook_points.hook_names(lm)
      >>> names[:3], names[-2:], len(names)
      (['embed', 'blocks.0.resid_pre', 'blocks.0.attn.q'], ['final_norm', 'logits'], 29)
    """
    found = select(lm).at_instances_of(HookPoint).get_by_path()
    names: list[str] = []
    pending: list[HookPoint] = []
    pending_stack: Any = None

    def flush() -> None:
        if pending:
            for s in range(len(pending[0].layers or ())):
                names.extend(h.names[s] for h in pending)
            pending.clear()

    for path, hook in found.items():
        stack_keys = [i for i, key in enumerate(path) if isinstance(key, nn.LayerStackGetAttrKey)]
        if len(stack_keys) > 1:
            raise ValueError(
                f"hook_names: the hook point {hook.name!r} is inside nested LayerStacks, which"
                " hook points do not support."
            )
        if not stack_keys or hook.layers is None:
            flush()
            pending_stack = None
            names.extend(hook.names)
            continue
        stack_path = path[: stack_keys[0] + 1]
        if stack_path != pending_stack:
            flush()
            pending_stack = stack_path
        if pending and len(hook.layers) != len(pending[0].layers or ()):
            raise ValueError(
                f"hook_names: the hook point {hook.name!r} covers {len(hook.layers)} layers but"
                f" others in its LayerStack cover {len(pending[0].layers or ())}."
            )
        pending.append(hook)
    flush()
    return names


NameFilter = str | Iterable[str] | Callable[[str], bool] | None
"""What `run_with_cache` (and other tools) accept as `names`."""

_GLOB_CHARS = "*?["
# Hook points not cached when `names` is None: each costs heads x embedding per token.
_ONLY_WHEN_ASKED = ("attn.result",)


def select_names(available: list[str], names: NameFilter, where: str) -> list[str]:
    """The names in `available` (in order) that `names` asks for.

    `names` is None (every name but `blocks.*.attn.result`), a name, a glob
    (`"blocks.*.attn.pattern"`), a site without its block prefix
    (`"resid_pre"` means `"blocks.*.resid_pre"`), a list of those, or a
    predicate on names.

    Raises:
      ValueError: for a name or glob that matches nothing (with the names
        that exist), or a filter of the wrong type.

    Example:
      >>> from saikei.models.transformer import _hook_points
      >>> names = ["embed", "blocks.0.resid_pre", "blocks.1.resid_pre", "logits"]
      >>> _hook_points.select_names(names, "resid_pre", "example")
      ['blocks.0.resid_pre', 'blocks.1.resid_pre']
      >>> _hook_points.select_names(names, lambda n: n.startswith("l"), "example")
      ['logits']
    """
    if names is None:
        return [n for n in available if not n.endswith(_ONLY_WHEN_ASKED)]
    if callable(names):
        return [n for n in available if names(n)]
    patterns = [names] if isinstance(names, str) else list(names)
    wanted: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(
                f"{where}: names must be None, a name or glob, a list of them, or a predicate"
                f" on names; got {pattern!r} in {names!r}."
            )
        matched = fnmatch.filter(available, pattern)
        if not matched:
            matched = fnmatch.filter(available, f"blocks.*.{pattern}")
        if not matched:
            sites = sorted(
                {n.split(".", 2)[2] if n.startswith("blocks.") else n for n in available}
            )
            raise ValueError(
                f"{where}: no hook point matches {pattern!r}. The model has the hook points"
                f" {sites} (inside blocks as 'blocks.{{i}}.<site>'); use a full name"
                " ('blocks.3.attn.pattern'), a glob ('blocks.*.attn.pattern') or a site name"
                " ('attn.pattern')."
            )
        wanted.update(matched)
    return [n for n in available if n in wanted]
