"""Generation: a jitted whole-loop `generate` and a penzai-style Python-loop sampler.

`generate` runs prefill and the whole decode loop as one compiled
`jax.lax.while_loop` over a `KVCachingTransformerLM` (defined in
`_kv_caching.py` and re-exported here); `temperature_sample_pyloop` is a
Python-loop sampler with penzai's call shape, for code that migrates from
penzai.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei import nn
from saikei.core import (
    AbstractVariable,
    AbstractVariableSlot,
    Parameter,
    bind_variables,
    pytree_dataclass,
    select,
    unbind_params,
    unbind_state_vars,
    variable_jit,
)
from saikei.core import named_axes as nx
from saikei.models.transformer import _capture, _hook_points
from saikei.models.transformer._kv_caching import (
    CACHE_END_INDEX_INPUT_NAME as CACHE_END_INDEX_INPUT_NAME,
)
from saikei.models.transformer._kv_caching import KV_POSITIONS_INPUT_NAME as KV_POSITIONS_INPUT_NAME
from saikei.models.transformer._kv_caching import KVCachingTransformerLM as KVCachingTransformerLM
from saikei.models.transformer._kv_caching import (
    _check_batch_axes,
    _is_concrete,
    _is_int,
    _reserved_axes,
)
from saikei.models.transformer.model_parts import TransformerLM, TransformerMetadata
from saikei.nn._layer_stack_types import (
    LAYERSTACK_INDEX_INPUT_NAME,
    LayerStackVarBehavior,
    declared_behavior,
)


def _filter_top_k(logits: jax.Array, k: jax.Array) -> jax.Array:
    # k is traced (no recompile per value), so the k-th largest comes from a sort.
    ascending = jnp.sort(logits, axis=-1)
    kth = jax.lax.dynamic_index_in_dim(ascending, logits.shape[-1] - k, axis=-1)
    return jnp.where(logits < kth, -jnp.inf, logits)


def _filter_top_p(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    # Keep the most likely tokens until their mass reaches top_p (at least one).
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = (mass_before < top_p).at[..., 0].set(True)
    threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def _choose(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    *,
    greedy: bool,
    use_top_k: bool,
    use_top_p: bool,
) -> jax.Array:
    """Picks one token per row of `logits` (shape `(..., vocabulary)`)."""
    logits = logits.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if use_top_k:
        logits = _filter_top_k(logits, top_k)
    if use_top_p:
        logits = _filter_top_p(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# The jitted generation loop -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The static part of a generation: what changes the compiled program."""

    max_new_tokens: int
    greedy: bool
    use_top_k: bool
    use_top_p: bool
    batch_names: tuple[str, ...]
    # (cache_len, batch axes) when the cache is built inside; None for a cached model.
    new_cache: tuple[int, tuple[tuple[str, int], ...]] | None
    # Hook point names captured at every step (generate's `capture=`).
    capture: tuple[str, ...] = ()
    # Run the LayerStacks as lists of blocks (batched decoding; see `_unstacked`).
    unstack: bool = False


def _layout(tree: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


def _same_layout(new: Any, old: Any, label: Any, strict: bool = True) -> Any:
    """Gives `new` state the memory layout of `old` (a loop carry must keep its type).

    With `strict=False`, state whose structure or shape changed is returned as
    it is (e.g. a saver that held None, or the prompt's activations before the
    first one-token step).
    """

    def reorder(a: Any, b: Any) -> Any:
        return a.order_like(b) if nx.is_namedarray(a) and nx.is_namedarray(b) else a

    same_structure = jax.tree_util.tree_structure(
        new, is_leaf=nx.is_namedarray
    ) == jax.tree_util.tree_structure(old, is_leaf=nx.is_namedarray)
    if same_structure:
        new = jax.tree_util.tree_map(reorder, new, old, is_leaf=nx.is_namedarray)
    if _layout(new) != _layout(old):
        if not strict:
            return new

        def describe(tree: Any) -> Any:
            return jax.tree_util.tree_map(
                lambda x: f"{jnp.result_type(x)}{list(jnp.shape(x))}", tree
            )

        raise ValueError(
            f"generate: the StateVariable {label!r} changed its structure, shape or dtype"
            f" between decoding steps ({describe(old)} -> {describe(new)}); state carried"
            " through the decode loop must keep its shape. Layers that record activations"
            " should write fixed-size values."
        )
    return new


def _run_with_state(
    model: Any, state: tuple[Any, ...], fn: Callable[[Any], Any], strict: bool = True
) -> Any:
    """Runs `fn(model)` on live copies of the frozen `state`; returns `(out, new state)`."""
    copies = [value.unfreeze_as_copy() for value in state]
    out = fn(bind_variables(model, copies))
    new_state = tuple(
        dataclasses.replace(old, value=_same_layout(copy.value, old.value, old.label, strict))
        for copy, old in zip(copies, state)
    )
    return out, new_state


def _changed_layout(new_state: tuple[Any, ...], old_state: tuple[Any, ...]) -> list[bool]:
    return [_layout(new.value) != _layout(old.value) for new, old in zip(new_state, old_state)]


def _shared_in(stack: nn.LayerStack, variable: AbstractVariable) -> bool:
    """Whether `variable` is one value that every layer of `stack` reads and updates."""
    return declared_behavior(variable, stack.stack_axis) is LayerStackVarBehavior.SHARED


def _stacks_run_as_lists(model: Any) -> bool:
    """Whether `model` has LayerStacks that `_unstacked` can run as lists of blocks.

    They may hold Parameters (sliced once per call) and SHARED state, such as
    a KV cache stacked over the layers, which the blocks update in turn.
    """
    stacks = select(model).at_instances_of(nn.LayerStack).get_sequence()
    return bool(stacks) and all(
        isinstance(leaf, Parameter) or _shared_in(stack, leaf)
        for stack, leaf in _in_stacks(model, AbstractVariable)
    )


def _in_stacks(model: Any, kind: type | tuple[type, ...]) -> list[tuple[nn.LayerStack, Any]]:
    """`(stack, leaf)` for every leaf of type `kind` inside `model`'s LayerStacks."""
    return [
        (stack, leaf)
        for stack in select(model).at_instances_of(nn.LayerStack).get_sequence()
        for leaf in jax.tree_util.tree_leaves(stack, is_leaf=lambda x: isinstance(x, kind))
        if isinstance(leaf, kind)
    ]


@pytree_dataclass
class _AtStackIndex(nn.Layer):
    """One block of an unstacked LayerStack, told its index as the stack tells it."""

    block: Any
    stack_axis: Any = dataclasses.field(metadata={"pytree_node": False})
    index: int = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        outer = side_inputs.get(LAYERSTACK_INDEX_INPUT_NAME, {})
        index = {**outer, self.stack_axis: jnp.int32(self.index)}
        return self.block(x, **{**side_inputs, LAYERSTACK_INDEX_INPUT_NAME: index})


def _unstacked(model: Any) -> Any:
    """`model` with every LayerStack run as a `Sequential` of its layers.

    Each layer gets its own slices of the stacked weights (under `jit`, XLA
    slices them once per call), and the `layerstack_index` side input the
    stack would give it (a KV cache stacked over the layers is one SHARED
    variable, which each layer updates in place at its index). Decoding
    several sequences at once needs this: XLA's CPU matrix product cannot
    read a weight in place from inside the stack's loop, so each step would
    copy every block's weights first.
    """

    def unstack(stack: nn.LayerStack) -> nn.Sequential:
        axis = stack.stack_axis

        def is_leaf(x: Any) -> bool:
            return isinstance(x, Parameter) or nx.is_namedarray(x)

        def layer(index: int) -> Any:
            def take(leaf: Any) -> Any:
                value = leaf.value if isinstance(leaf, Parameter) else leaf
                if not nx.is_namedarray(value) or axis not in value.named_shape:
                    return leaf
                if isinstance(leaf, Parameter):
                    return Parameter(label=f"{leaf.label}[{index}]", value=value[{axis: index}])
                return value[{axis: index}]

            block = jax.tree_util.tree_map(take, stack.stacked_sublayers, is_leaf=is_leaf)
            return _AtStackIndex(block, axis, index)

        return nn.Sequential([layer(i) for i in range(stack.stack_axis_size)])

    return select(model).at_instances_of(nn.LayerStack).apply(unstack)


def _generate_impl(
    model: Any,
    params: tuple[Any, ...],
    state: tuple[Any, ...],
    prompt: nx.NamedArray,
    prompt_positions: nx.NamedArray | None,
    rng: jax.Array | None,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    stop_tokens: jax.Array,
    pad_id: jax.Array,
    plan: _Plan,
) -> tuple[jax.Array, tuple[Any, ...]]:
    model = bind_variables(model, params)
    if rng is None:  # greedy: the key is never read
        rng = jax.random.key(0)
    if plan.unstack:
        # The barrier makes XLA slice the stacked weights once, before the
        # loop, instead of again inside every step.
        model, values = unbind_params(_unstacked(model), freeze=True)
        model = bind_variables(model, jax.lax.optimization_barrier(values))
    own_state = len(state)
    if plan.new_cache is not None:
        cache_len, batch_axes = plan.new_cache
        model = KVCachingTransformerLM.from_uncached(
            model, cache_len=cache_len, batch_axes=dict(batch_axes)
        )
        model, fresh = unbind_state_vars(model, freeze=True)
        state = (*state, *fresh)
    collect = None
    if plan.capture:
        model, state, collect = _capture.attach(
            model, state, plan.capture, plan.max_new_tokens, prompt
        )

    def step_input(step: Any) -> dict[str, Any]:
        return {_capture.CAPTURE_STEP_INPUT_NAME: jnp.int32(step)} if plan.capture else {}

    names = (*plan.batch_names, "seq")
    choose = functools.partial(
        _choose,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=plan.greedy,
        use_top_k=plan.use_top_k,
        use_top_p=plan.use_top_p,
    )

    def prefill(m: KVCachingTransformerLM) -> tuple[jax.Array, jax.Array]:
        if prompt_positions is None:
            # Leading pads get position -1; real tokens continue from the cache.
            tokens = prompt.unwrap(*names)
            real = jnp.cumsum(tokens != pad_id, axis=-1) > 0
            start = m.next_positions().unwrap(*plan.batch_names)[..., None]
            counted = jnp.cumsum(real, axis=-1, dtype=jnp.int32)
            positions = nx.wrap(jnp.where(real, start + counted - 1, -1), *names)
        else:
            positions = prompt_positions
        logits = m(prompt, token_positions=positions, last_logits_only=True, **step_input(0))
        next_pos = m.next_positions().unwrap(*plan.batch_names)
        return logits.unwrap(*names, "vocabulary")[..., 0, :], next_pos

    before_prefill = state
    # Savers may change shape here (None -> the prompt's activations).
    (logits, next_pos), state = _run_with_state(model, state, prefill, strict=False)
    recorders = any(_changed_layout(state, before_prefill))
    first = choose(logits, jax.random.fold_in(rng, 0))
    batch_shape = first.shape
    out = jnp.full((*batch_shape, plan.max_new_tokens), pad_id, jnp.int32)
    out = out.at[..., 0].set(first)
    done = jnp.isin(first, stop_tokens)
    last_real = jnp.ones(batch_shape, bool)

    def decode_step(carry: tuple[Any, ...], strict: bool = True) -> tuple[Any, ...]:
        step, out, last, done, last_real, next_pos, state = carry
        positions = jnp.where(last_real, next_pos, -1)

        def run(m: KVCachingTransformerLM) -> jax.Array:
            logits = m(
                nx.wrap(last[..., None], *names),
                token_positions=nx.wrap(positions[..., None], *names),
                **step_input(step),
            )
            return logits.unwrap(*names, "vocabulary")[..., 0, :]

        logits, state = _run_with_state(model, state, run, strict)
        token = jnp.where(done, pad_id, choose(logits, jax.random.fold_in(rng, step)))
        out = jax.lax.dynamic_update_index_in_dim(out, token, step, axis=-1)
        next_pos = next_pos + last_real.astype(jnp.int32)
        return step + 1, out, token, done | jnp.isin(token, stop_tokens), ~done, next_pos, state

    def keep_going(carry: tuple[Any, ...]) -> jax.Array:
        step, done = carry[0], carry[3]
        return (step < plan.max_new_tokens) & ~jnp.all(done)

    carry = (jnp.int32(1), out, first, done, last_real, next_pos, state)
    if recorders and plan.max_new_tokens > 1:
        # State that took the prompt's shape in prefill (savers) takes the
        # one-token shape in the first step, so that step runs before the loop.
        # Had every sequence stopped already, the other state stays as it was.
        stepped = decode_step(carry, strict=False)
        changed = _changed_layout(stepped[-1], state)
        all_done = jnp.all(done)
        kept = tuple(
            new
            if moved
            else jax.tree_util.tree_map(lambda n, o: jnp.where(all_done, o, n), new, old)
            for new, old, moved in zip(stepped[-1], state, changed)
        )
        carry = (*stepped[:-1], kept)
    *rest, state = carry
    drop_unit_dims, restore = _carry_form(state, _stack_carried(model))

    def loop_step(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        *stepped, state = decode_step((*carry[:-1], restore(carry[-1])))
        return (*stepped, drop_unit_dims(state))

    carry = (*rest, drop_unit_dims(state))
    _, out, _, _, _, _, flat = jax.lax.while_loop(keep_going, loop_step, carry)
    state = restore(flat)
    return out, state[:own_state], ({} if collect is None else collect(state))


def _stack_carried(model: Any) -> set[Any]:
    """Labels of the state variables that `model`'s LayerStacks carry through their loops."""
    return {leaf.label for _, leaf in _in_stacks(model, (AbstractVariable, AbstractVariableSlot))}


def _carry_form(
    state: tuple[Any, ...], keep: set[Any]
) -> tuple[Callable[[Any], list[Any]], Callable[[list[Any]], Any]]:
    """How the decode loop carries `state`: its arrays without their size-1 axes.

    Returns `(drop, restore)`: `drop(state)` is the list of `state`'s leaves
    with size-1 axes removed, and `restore` rebuilds `state` from such a list.
    A KV cache for one sequence has a batch axis of size 1; carried with it,
    XLA's CPU compiler copies every layer's cache four times per step (it
    gives the in-place update and the attention's read separate copies).
    Without it, once (with `nn._attention._write_kv`, which writes without
    the size-1 axes). SmolLM2 with a 1040-slot cache and its blocks as a
    list: 41.5 -> 29.7 ms per token. State whose label is in `keep` keeps
    its shape: a LayerStack's own loop carries it, and a reshape at that
    loop's boundary would copy it whole.
    """
    leaves, treedef = jax.tree_util.tree_flatten(state)
    shapes = [jnp.shape(leaf) for leaf in leaves]
    squeeze = [
        value.label not in keep and 1 in jnp.shape(leaf)
        for value in state
        for leaf in jax.tree_util.tree_leaves(value)
    ]

    def drop(tree: Any) -> list[Any]:
        return [
            jnp.reshape(leaf, [n for n in jnp.shape(leaf) if n != 1]) if flag else leaf
            for leaf, flag in zip(jax.tree_util.tree_leaves(tree), squeeze, strict=True)
        ]

    def restore(flat: list[Any]) -> Any:
        return jax.tree_util.tree_unflatten(
            treedef,
            [jnp.reshape(x, s) if flag else x for x, s, flag in zip(flat, shapes, squeeze)],
        )

    return drop, restore


_generate_jit = jax.jit(_generate_impl, static_argnames=("plan",))


def _prompt_batch_names(prompt: Any, metadata: TransformerMetadata) -> tuple[str, ...]:
    where = "generate"
    if not nx.is_namedarray(prompt) or "seq" not in prompt.named_shape or prompt.positional_shape:
        shape = getattr(prompt, "named_shape", getattr(prompt, "shape", None))
        raise ValueError(
            f"{where}: prompt_tokens must be a NamedArray with a 'seq' axis and only named"
            f" axes, got {type(prompt).__name__} with shape {shape}. Wrap them, e.g."
            " sk.nx.wrap(ids, 'batch', 'seq')."
        )
    if not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise TypeError(f"{where}: prompt_tokens must be integer ids, got dtype {prompt.dtype}.")
    batch_axes = {n: s for n, s in prompt.named_shape.items() if n != "seq"}
    _check_batch_axes(batch_axes, _reserved_axes(metadata), where)
    return tuple(batch_axes)


def _check_options(
    max_new_tokens: Any,
    temperature: Any,
    top_k: Any,
    top_p: Any,
    rng: Any,
    vocab_size: int,
) -> None:
    where = "generate"
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"{where}: max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if not isinstance(temperature, int | float | np.number) or not temperature >= 0:
        raise ValueError(
            f"{where}: temperature must be a number >= 0 (0 means greedy), got {temperature!r}."
        )
    if top_k is not None and (not _is_int(top_k) or not 1 <= top_k <= vocab_size):
        raise ValueError(
            f"{where}: top_k must be None or an int in [1, vocab_size={vocab_size}], got {top_k!r}."
        )
    if top_p is not None and (not isinstance(top_p, int | float | np.number) or not 0 < top_p <= 1):
        raise ValueError(f"{where}: top_p must be None or a number in (0, 1], got {top_p!r}.")
    if temperature > 0 and rng is None:
        raise ValueError(
            f"{where}: sampling with temperature={temperature} needs a PRNG key; pass"
            " rng=jax.random.key(0) (or use temperature=0 for greedy decoding)."
        )


def _held_blocks(data: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """`(start indices, host block)` for the parts of `data` this process can read.

    An array spread over several processes is checked where it lives: each
    process looks at its own shards that hold whole sequences (last axis).
    """
    if not isinstance(data, jax.Array) or data.is_fully_addressable or data.is_fully_replicated:
        return [(np.zeros(np.ndim(data), int), np.asarray(data))]
    blocks = []
    for shard in data.addressable_shards:
        bounds = [s.indices(n)[:2] for s, n in zip(shard.index, data.shape)]
        if shard.replica_id == 0 and bounds[-1] == (0, data.shape[-1]):
            blocks.append((np.array([b[0] for b in bounds]), np.asarray(shard.data)))
    return blocks


def _check_prompt_ends_real(
    prompt: nx.NamedArray, positions: nx.NamedArray | None, pad_id: int, names: tuple[str, ...]
) -> None:
    if positions is not None:
        data = positions.broadcast_to((), prompt.named_shape).unwrap(*names)
        what = "the last prompt position is -1 (padding)"
    else:
        data = prompt.unwrap(*names)
        what = f"every prompt token is pad_id={pad_id}"
    if not _is_concrete(data):
        return
    rows = []
    for offset, block in _held_blocks(data):
        bad = block[..., -1] < 0 if positions is not None else np.all(block == pad_id, axis=-1)
        rows += [tuple(int(i) for i in row + offset[:-1]) for row in np.argwhere(bad)]
    if rows:
        raise ValueError(
            f"generate: for batch entries {rows} (axes {names[:-1]}) {what}. Prompts are"
            " left-padded: the last token of each must be real, since the next token is"
            " predicted from it."
        )


def generate(
    model: TransformerLM | KVCachingTransformerLM,
    prompt_tokens: nx.NamedArray,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    rng: jax.Array | None = None,
    pad_id: int = 0,
    prompt_positions: nx.NamedArray | None = None,
    cache_len: int | None = None,
    capture: Any = None,
) -> Any:
    """Generates tokens after a (left-padded) prompt, with the whole loop compiled.

    The prompt is run through the cached model at once (prefill; logits only
    at its last position), then one token per step inside a single
    `jax.lax.while_loop`. Parameters enter the compiled function as inputs,
    and only cache state comes back out. The program is compiled once per
    model structure, prompt shape, `max_new_tokens` and choice of sampling
    options (greedy or not, whether `top_k` and `top_p` are set); the values
    of `temperature`, `top_k` and `top_p`, the stop tokens (up to 8 of them),
    the pad id, the rng and the weights themselves do not cause recompiles. Every layer of the model runs at every step, including
    layers the user inserted. A model whose blocks form a `LayerStack` (the
    default of `load_pretrained`) decodes one sequence with the stack's
    compiled loop; with several sequences (and no `capture`), its blocks run
    as a list inside the compiled program, which XLA's CPU backend
    multiplies faster, at the cost of a longer first compile.

    Args:
      model: A `TransformerLM` (a cache of length `cache_len` is built for
        this call and dropped after) or a `KVCachingTransformerLM` (generation
        continues after what its cache holds, and its state is updated: it
        then holds the prompt and every new token but the last).
      prompt_tokens: Integer ids with a `seq` axis; all other axes are batch
        axes. Shorter prompts are padded on the left with `pad_id`.
      max_new_tokens: The number of tokens to generate per sequence.
      temperature: Softmax temperature; 0 picks the most likely token
        (greedy; `top_k`, `top_p` and `rng` are then unused).
      top_k: Sample only among the `top_k` most likely tokens.
      top_p: Sample only among the most likely tokens whose probabilities sum
        to at least `top_p` (nucleus sampling), after `top_k`.
      stop_tokens: Token ids that end a sequence. The stop token is emitted;
        the sequence then emits `pad_id`. The loop ends when all sequences
        have stopped.
      rng: A PRNG key, required when `temperature > 0`.
      pad_id: The padding token id (leading ones in the prompt are padding).
      prompt_positions: Explicit positions of the prompt tokens (axis `seq`,
        optionally batch axes; -1 for padding), overriding the left-padding
        convention, e.g. when `pad_id` is also a real token.
      cache_len: Cache length for an uncached model; defaults to exactly what
        the call needs (prompt length + `max_new_tokens` - 1).
      capture: Hook point names (as for `saikei.interp.run_with_cache`: a
        name, a glob, a site such as `"attn.pattern"`, a list or a predicate)
        whose values to return for every step; hook points are inserted
        into an uncached model first. Step 0 holds the activations at the
        last prompt position (which predict the first new token), step `s`
        those of the call that predicts token `s`. Steps after every
        sequence stopped stay zero.

    Returns:
      The new tokens: an int32 NamedArray with the prompt's batch axes and
      `seq` of size `max_new_tokens`. With `capture`, a pair `(tokens,
      captured)` where `captured` maps each name to its values with a
      `step` axis (of size `max_new_tokens`) in place of `seq`.

    Raises:
      ValueError: for misshapen prompts, bad options, or a cache too short
        for the prompt and the new tokens.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import sampling
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> prompt = sk.nx.wrap(jax.numpy.array([[0, 3, 4], [5, 6, 7]]), "batch", "seq")
      >>> new = sampling.generate(lm, prompt, max_new_tokens=4, temperature=0.0)
      >>> new.named_shape
      {'batch': 2, 'seq': 4}
    """
    metadata = model.metadata
    batch_names = _prompt_batch_names(prompt_tokens, metadata)
    _check_options(max_new_tokens, temperature, top_k, top_p, rng, metadata.vocab_size)
    if not _is_int(pad_id):
        raise TypeError(f"generate: pad_id must be an int, got {pad_id!r}.")
    try:
        stops = np.asarray(list(stop_tokens), dtype=np.int32).reshape(-1)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"generate: stop_tokens must be a sequence of token ids, got {stop_tokens!r}."
        ) from error
    # Padded with -1 (never a token) to a multiple of 8, so that the number of
    # stop tokens rarely changes the compiled program.
    padded_len = 8 * max(1, -(-len(stops) // 8))
    stops = np.pad(stops, (0, padded_len - len(stops)), constant_values=-1)
    names = (*batch_names, "seq")
    if prompt_positions is not None and (
        not nx.is_namedarray(prompt_positions)
        or not set(prompt_positions.named_shape) <= set(names)
        or not jnp.issubdtype(prompt_positions.dtype, jnp.integer)
    ):
        raise ValueError(
            f"generate: prompt_positions must be an integer NamedArray with axes among {names},"
            f" got {getattr(prompt_positions, 'named_shape', prompt_positions)!r}."
        )
    _check_prompt_ends_real(prompt_tokens, prompt_positions, pad_id, names)
    prompt_len = prompt_tokens.named_shape["seq"]
    needed = prompt_len + max_new_tokens - 1
    batch_axes = {n: prompt_tokens.named_shape[n] for n in batch_names}

    if isinstance(model, KVCachingTransformerLM):
        if cache_len is not None and cache_len != model.cache_len:
            raise ValueError(
                f"generate: cache_len={cache_len} differs from the cached model's cache_len"
                f" {model.cache_len}; leave cache_len out for a cached model."
            )
        if batch_axes != model.batch_axes:
            raise ValueError(
                f"generate: the prompt's batch axes {batch_axes} differ from the cached model's"
                f" batch_axes {model.batch_axes}."
            )
        end = model.cache_end_index.value
        used = int(end) if _is_concrete(end) else 0
        if used + needed > model.cache_len:
            raise ValueError(
                f"generate: the cache holds {used} of {model.cache_len} tokens, so it has no"
                f" room for a prompt of {prompt_len} tokens and {max_new_tokens} new ones"
                f" ({needed} more slots). Build the cached model with a larger cache_len."
            )
        new_cache = None
    elif isinstance(model, TransformerLM):
        if cache_len is None:
            cache_len = needed
        if not _is_int(cache_len) or cache_len < needed:
            raise ValueError(
                f"generate: cache_len={cache_len!r} is too short for a prompt of {prompt_len}"
                f" tokens and {max_new_tokens} new ones; it needs at least {needed} slots"
                " (prompt length + max_new_tokens - 1)."
            )
        new_cache = (int(cache_len), tuple(batch_axes.items()))
    else:
        raise TypeError(
            "generate: model must be a TransformerLM or KVCachingTransformerLM, got"
            f" {type(model).__name__}."
        )

    wanted: tuple[str, ...] = ()
    if capture is not None:
        if isinstance(model, TransformerLM):
            model = _hook_points.with_hook_points(model)
        available = _hook_points.hook_names(model)
        if not available:
            raise ValueError(
                "generate: capture= needs hook points, and this cached model has none. Insert"
                " them before caching: KVCachingTransformerLM.from_uncached("
                "saikei.interp.with_hook_points(lm), ...)."
            )
        wanted = tuple(_hook_points.select_names(available, capture, "generate"))
    plan = _Plan(
        max_new_tokens=int(max_new_tokens),
        greedy=temperature == 0,
        use_top_k=temperature != 0 and top_k is not None and top_k < metadata.vocab_size,
        use_top_p=temperature != 0 and top_p is not None and top_p < 1,
        batch_names=batch_names,
        new_cache=new_cache,
        capture=wanted,
        # One sequence decodes fastest with the weights read in place from the
        # stack; several run as a block list (see `_unstacked`).
        unstack=not wanted
        and int(np.prod(list(batch_axes.values()), dtype=int)) > 1
        and _stacks_run_as_lists(model),
    )
    tree, params = unbind_params(model, freeze=True)
    tree, state_vars = unbind_state_vars(tree)
    tokens, new_state, captured = _generate_jit(
        tree,
        params,
        tuple(v.freeze() for v in state_vars),
        prompt_tokens,
        prompt_positions,
        # Greedy decoding never reads the key. The scalars stay numpy values:
        # making them JAX arrays here would compile four tiny programs in
        # every new process, a tenth of the first call's time.
        None if plan.greedy else rng,
        np.float32(temperature if temperature else 1.0),
        np.int32(metadata.vocab_size if top_k is None else top_k),
        np.float32(1.0 if top_p is None else top_p),
        stops,
        np.int32(pad_id),
        plan=plan,
    )
    for var, value in zip(state_vars, new_state):
        var.update(value)
    if capture is not None:
        return nx.wrap(tokens, *names), captured
    return nx.wrap(tokens, *names)


# A Python-loop sampler with penzai's call shape -----------------------------------------


def _call_cached(model: KVCachingTransformerLM, tokens: nx.NamedArray) -> nx.NamedArray:
    return model(tokens)


_call_cached_jit = variable_jit(_call_cached)


def temperature_sample_pyloop(
    model: KVCachingTransformerLM,
    prompt: nx.NamedArray,
    rng: jax.Array,
    temperature: float = 1.0,
    max_sampling_steps: int | None = None,
) -> nx.NamedArray:
    """Samples a continuation one token per Python iteration (penzai's simple sampler).

    The model call is compiled (`sk.variable_jit`), the loop is not; prefer
    `generate` for speed, stop tokens and top-k/top-p. Positions follow the
    cached model: with `pad_id` set, prompt tokens equal to it are padding
    and the logits are read at each sequence's last real token.

    Args:
      model: A `KVCachingTransformerLM`; its state is updated as it samples.
      prompt: Integer ids with axes `model.batch_axes` and `seq`.
      rng: A PRNG key.
      temperature: Softmax temperature; 0 is greedy.
      max_sampling_steps: Tokens to sample; by default until the cache is full.

    Returns:
      The sampled tokens (axes `batch_axes` and `seq`).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import sampling
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11)
      >>> cached = sampling.KVCachingTransformerLM.from_uncached(
      ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)), 8, {})
      >>> out = sampling.temperature_sample_pyloop(
      ...     cached, sk.nx.wrap(jax.numpy.array([1, 2]), "seq"), jax.random.key(1),
      ...     max_sampling_steps=3)
      >>> out.named_shape
      {'seq': 3}
    """
    if not isinstance(model, KVCachingTransformerLM):
        raise TypeError(
            "temperature_sample_pyloop: model must be a KVCachingTransformerLM; convert it"
            " with KVCachingTransformerLM.from_uncached(model, cache_len=..., batch_axes=...)."
        )
    if not isinstance(temperature, int | float | np.number) or not temperature >= 0:
        raise ValueError(
            f"temperature_sample_pyloop: temperature must be >= 0, got {temperature!r}."
        )
    model._check_tokens(prompt, "temperature_sample_pyloop")
    batch_names = tuple(model.batch_axes)
    names = (*batch_names, "seq")
    room = model.cache_len - int(model.cache_end_index.value) - prompt.named_shape["seq"] + 1
    if max_sampling_steps is None:
        max_sampling_steps = room
    if not _is_int(max_sampling_steps) or not 1 <= max_sampling_steps <= room:
        raise ValueError(
            f"temperature_sample_pyloop: max_sampling_steps must be an int in [1, {room}] (the"
            f" cache has room for the prompt and {room} sampled tokens), got"
            f" {max_sampling_steps!r}."
        )
    logits = _call_cached_jit(model, prompt).unwrap(*names, "vocabulary")
    if model.pad_id is None:
        last = logits[..., -1, :]
    else:
        real = np.asarray(prompt.unwrap(*names)) != model.pad_id
        index = np.where(real, np.arange(real.shape[-1]), -1).max(axis=-1)
        last = jnp.take_along_axis(logits, jnp.asarray(index)[..., None, None], axis=-2)[..., 0, :]
    sampled = []
    for step in range(max_sampling_steps):
        if temperature == 0:
            token = jnp.argmax(last, axis=-1).astype(jnp.int32)
        else:
            key = jax.random.fold_in(rng, step)
            token = jax.random.categorical(key, last.astype(jnp.float32) / temperature, axis=-1)
            token = token.astype(jnp.int32)
        sampled.append(token)
        if step + 1 < max_sampling_steps:
            step_logits = _call_cached_jit(model, nx.wrap(token[..., None], *names))
            last = step_logits.unwrap(*names, "vocabulary")[..., 0, :]
    return nx.wrap(jnp.stack(sampled, axis=-1), *names)
