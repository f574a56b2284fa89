"""`ActivationCache`: the activations `run_with_cache` recorded, by hook point name."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from saikei import nn
from saikei.core import named_axes as nx
from saikei.core import select
from saikei.core._struct import Struct, pytree_dataclass
from saikei.models.transformer._hook_points import HeadResultSite, HookPoint


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


@pytree_dataclass
class ActivationCache(Struct, Mapping):
    """Activations by hook point name: a read-only mapping and a JAX pytree.

    Made by `saikei.interp.run_with_cache`. Index it by full name
    (`cache["blocks.3.attn.pattern"]`); iterate it for the names in the order
    the model ran them. Being a pytree, it can be returned from `jax.jit`,
    mapped over with `jax.tree_util`, and differentiated through. Axis names
    follow the table in `saikei.interp`; `stack`, `accumulated_resid`,
    `decompose_resid` and `head_results` add a `layer` or `component` axis.

    Attributes:
      names: The recorded names, in execution order.
      values: The values, one per name.
      final_norm_scale: The factor the final norm divided each position by
        in the real run (1 / RMS, or 1 / standard deviation for LayerNorm),
        with the tokens' axes.
      final_norm_affine: The final norm's learned scale (and shift) layers.
      final_norm_centers: Whether the final norm subtracts the mean
        (LayerNorm) before scaling.
      num_layers: The number of blocks in the model.
      attn_post_norm: Whether attention outputs are normalized after the
        heads are summed (Gemma 2/3), which makes per-head contributions to
        the residual stream nonlinear.
      attn_post_norms: For such models, one entry per block: None for a
        block without a post-attention norm, else `(scale, epsilon)`, the
        norm's learned per-feature multiplier (over `embedding`) and the
        epsilon added to its mean square; `head_results` freezes the norm's
        denominator with them. None when the model has no such norm or its
        norm is not a shift-free RMS norm.
      has_pos_embed: Whether the model adds learned position embeddings
        (`pos_embed`) to the token embeddings.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=8)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> _, cache = sk.interp.run_with_cache(lm, sk.nx.wrap(jax.numpy.arange(4), "seq"))
      >>> len(cache), "blocks.1.mlp_out" in cache
      (30, True)
      >>> cache.stack("resid_post").named_shape
      {'layer': 2, 'seq': 4, 'embedding': 8}
    """

    names: tuple[str, ...] = _static()
    values: tuple[Any, ...]
    final_norm_scale: Any = None
    final_norm_affine: Any = None
    final_norm_centers: bool = _static(default=False)
    num_layers: int = _static(default=0)
    attn_post_norm: bool = _static(default=False)
    has_pos_embed: bool = _static(default=False)
    attn_post_norms: Any = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values):
            raise ValueError(
                f"ActivationCache: {len(self.names)} names but {len(self.values)} values."
            )

    # Mapping ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            pass
        shown = list(self.names[:6]) + (["..."] if len(self.names) > 6 else [])
        raise KeyError(
            f"{name!r} is not in this cache, which holds {len(self.names)} names ({shown})."
            " Ask run_with_cache for it, e.g. names=[..., " + repr(name) + "] or names=None"
            " (all but attn.result)."
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __repr__(self) -> str:
        return f"ActivationCache({len(self.names)} names: {list(self.names)})"

    # Stacks ----------------------------------------------------------------------------

    def _layers(self, layer: int | None) -> range:
        if layer is None:
            return range(self.num_layers)
        if (
            isinstance(layer, bool)
            or not isinstance(layer, int)
            or not 0 <= layer <= self.num_layers
        ):
            raise ValueError(
                f"ActivationCache: layer must be an int in [0, {self.num_layers}], got {layer!r}."
            )
        return range(layer)

    def stack(self, site: str, layers: Any = None) -> nx.NamedArray:
        """The values of one site in every block (or in `layers`), stacked along `layer`.

        Args:
          site: A name without the `blocks.{i}.` prefix, e.g. `"resid_post"`
            or `"attn.pattern"`.
          layers: Block indices to stack (default: all blocks, in order).

        Returns:
          A NamedArray with a new leading `layer` axis.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models.transformer.variants import llamalike
          >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1,
          ...     query_head_multiplier=1, embedding_dim=8, projection_dim=4,
          ...     mlp_hidden_dim=16, num_decoder_blocks=3, vocab_size=11)
          >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
          >>> _, cache = sk.interp.run_with_cache(lm, sk.nx.wrap(jax.numpy.arange(4), "seq"),
          ...     names="attn.pattern")
          >>> cache.stack("attn.pattern", layers=[0, 2]).named_shape["layer"]
          2
        """
        indices = range(self.num_layers) if layers is None else list(layers)
        if not indices:
            raise ValueError(f"ActivationCache.stack({site!r}): no layers to stack.")
        return nx.stack([self[f"blocks.{i}.{site}"] for i in indices], "layer")

    def accumulated_resid(
        self,
        layer: int | None = None,
        *,
        apply_final_norm: bool = False,
        return_labels: bool = False,
    ) -> Any:
        """The residual stream entering each block, then leaving the last, along `layer`.

        Entry `i < num_layers` is `blocks.{i}.resid_pre`; the last entry is
        `blocks.{num_layers - 1}.resid_post`, the residual that enters the
        final norm. With `layer`, only the first `layer + 1` entries
        (the residual stream up to the input of block `layer`).

        Args:
          layer: Stop after the residual entering this block (`num_layers`
            means all entries).
          apply_final_norm: Normalize each entry with the final norm, its
            scale frozen from the real run, scale and shift included (the
            logit lens: the last entry then equals `cache["final_norm"]`).
          return_labels: Also return the names of the entries.

        Returns:
          A NamedArray with a `layer` axis, and the labels if asked.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models.transformer.variants import llamalike
          >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1,
          ...     query_head_multiplier=1, embedding_dim=8, projection_dim=4,
          ...     mlp_hidden_dim=16, num_decoder_blocks=2, vocab_size=11)
          >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
          >>> _, cache = sk.interp.run_with_cache(lm, sk.nx.wrap(jax.numpy.arange(4), "seq"))
          >>> resid, labels = cache.accumulated_resid(apply_final_norm=True, return_labels=True)
          >>> labels
          ['blocks.0.resid_pre', 'blocks.1.resid_pre', 'blocks.1.resid_post']
          >>> float(abs(resid[{"layer": -1}] - cache["final_norm"]).data_array.max()) < 1e-5
          True
        """
        n = self.num_layers
        labels = [f"blocks.{i}.resid_pre" for i in range(n)] + [f"blocks.{n - 1}.resid_post"]
        if layer is not None:
            labels = labels[: len(self._layers(layer)) + 1]
        stacked = nx.stack([self[name] for name in labels], "layer")
        if apply_final_norm:
            stacked = self.apply_final_norm(stacked, add_bias=True)
        return (stacked, labels) if return_labels else stacked

    def decompose_resid(
        self, *, apply_final_norm: bool = False, return_labels: bool = False
    ) -> Any:
        """The pieces that sum to the final residual stream, along a `component` axis.

        The pieces are `embed`, `pos_embed` (GPT-2), then each block's
        `attn_out` and `mlp_out`; their sum is the residual entering the
        final norm. Needs those names in the cache.

        Args:
          apply_final_norm: Pass each piece through the final norm with its
            scale frozen from the real run, without its shift (so the pieces
            sum to `cache["final_norm"]` minus the norm's shift, zero for
            RMS norms).
          return_labels: Also return the name of each piece.

        Returns:
          A NamedArray with a `component` axis, and the labels if asked.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models.transformer.variants import llamalike
          >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1,
          ...     query_head_multiplier=1, embedding_dim=8, projection_dim=4,
          ...     mlp_hidden_dim=16, num_decoder_blocks=2, vocab_size=11)
          >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
          >>> _, cache = sk.interp.run_with_cache(lm, sk.nx.wrap(jax.numpy.arange(4), "seq"))
          >>> parts = cache.decompose_resid()
          >>> total = sk.nx.nmap(lambda a: a.sum(0))(parts.untag("component"))
          >>> float(abs(total - cache["blocks.1.resid_post"]).data_array.max()) < 1e-5
          True
        """
        labels = ["embed"] + (["pos_embed"] if self.has_pos_embed else [])
        for i in range(self.num_layers):
            labels += [f"blocks.{i}.attn_out", f"blocks.{i}.mlp_out"]
        stacked = nx.stack([self[name] for name in labels], "component")
        if apply_final_norm:
            stacked = self.apply_final_norm(stacked)
        return (stacked, labels) if return_labels else stacked

    def head_results(self, layer: int | None = None) -> nx.NamedArray:
        """Each head's output as added to the residual stream, of one block or all.

        A block's `attn_out` is the sum of its heads' results plus the
        attention output bias (if the model has one). Needs
        `blocks.{i}.attn.result` in the cache (ask `run_with_cache` for
        `"attn.result"`).

        Models that normalize the attention output after summing the heads
        (Gemma 2/3 post-attention RMS norms) get the usual frozen-norm
        linearization: the norm's denominator is frozen from the real run, so
        head `h`'s result is
        `scale * attn.result[h] / rms(sum over heads of attn.result)`, with
        `scale` the norm's learned multiplier and the RMS including the
        norm's epsilon. The results then sum exactly to `attn_out` (what the
        block adds to the residual stream), and their logit attributions to
        the logit. `cache["blocks.{i}.attn.result"]` itself stays the
        per-head output before that norm (what flows into it, and what
        interventions on `attn.result` change; the real norm then
        renormalizes).

        Args:
          layer: One block's index, or None for every block along `layer`.

        Returns:
          A NamedArray with a `heads` axis (and `layer` when `layer` is None).

        Raises:
          ValueError: for a layer out of range, or a post-attention norm that
            is not a shift-free RMS norm over `embedding` without an output
            bias (no model saikei builds has one).

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models.transformer.variants import llamalike
          >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1,
          ...     query_head_multiplier=2, embedding_dim=8, projection_dim=4,
          ...     mlp_hidden_dim=16, num_decoder_blocks=2, vocab_size=11,
          ...     use_post_attn_norm=True)
          >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
          >>> _, cache = sk.interp.run_with_cache(lm, sk.nx.wrap(jax.numpy.arange(4), "seq"),
          ...     names=["attn.result", "attn_out"])
          >>> results = cache.head_results()
          >>> results.named_shape
          {'layer': 2, 'heads': 2, 'seq': 4, 'embedding': 8}
          >>> summed = sk.nx.nmap(lambda a: a.sum(0))(results[{"layer": 1}].untag("heads"))
          >>> float(abs(summed - cache["blocks.1.attn_out"]).data_array.max()) < 1e-5
          True
        """
        if self.attn_post_norm and self.attn_post_norms is None:
            raise ValueError(
                "ActivationCache.head_results: this model normalizes the attention output after"
                " summing the heads with a norm that is not a shift-free RMS norm over"
                " 'embedding' (or adds an output bias before it), so the heads' results cannot"
                " be made to sum to attn_out. Use cache['blocks.{i}.attn.result'] (the per-head"
                " output before that norm)."
            )
        if layer is None:
            return nx.stack([self._head_result(i) for i in range(self.num_layers)], "layer")
        self._layers(layer)
        if layer == self.num_layers:
            raise ValueError(
                f"ActivationCache.head_results: layer {layer} is past the last block"
                f" ({self.num_layers - 1})."
            )
        return self._head_result(layer)

    def _head_result(self, i: int) -> nx.NamedArray:
        result = self[f"blocks.{i}.attn.result"]
        norms = self.attn_post_norms
        entry = norms[i] if norms is not None and i < len(norms) else None
        if entry is None:
            return result
        scale, epsilon = entry
        x = result.astype(jnp.promote_types(result.dtype, jnp.float32))
        total = nx.nmap(lambda a: a.sum(0))(x.untag("heads"))
        mean_square = nx.nmap(lambda a: jnp.mean(jnp.square(a)))(total.untag("embedding"))
        inverse_rms = nx.nmap(jax.lax.rsqrt)(mean_square + epsilon)
        return (x * inverse_rms * scale).order_like(result)

    def apply_final_norm(self, stack: nx.NamedArray, *, add_bias: bool = False) -> nx.NamedArray:
        """Applies the final norm to `stack` with the normalization frozen from the real run.

        Each position is divided by the factor the final norm divided the real
        residual by (after subtracting the mean over `embedding` for
        LayerNorm, which is linear), then scaled by the norm's learned
        weights. The result is linear in `stack`, so pieces of a residual
        (from `decompose_resid` or `head_results`) normalized this way sum to
        the normalized whole, which logit attributions need.

        Args:
          stack: A NamedArray with an `embedding` axis and the tokens' axes
            (or a subset that broadcasts), plus any others.
          add_bias: Add the norm's learned shift (LayerNorm only); leave it
            out for pieces that are summed afterwards.

        Returns:
          The normalized stack, with the same axes.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models.transformer.variants import gpt2
          >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=16,
          ...     num_decoder_blocks=1, vocab_size=11, max_positions=8)
          >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
          >>> _, cache = sk.interp.run_with_cache(lm, sk.nx.wrap(jax.numpy.arange(4), "seq"))
          >>> normed = cache.apply_final_norm(cache["blocks.0.resid_post"], add_bias=True)
          >>> float(abs(normed - cache["final_norm"]).data_array.max()) < 1e-5
          True
        """
        if not nx.is_namedarray(stack) or "embedding" not in stack.named_shape:
            raise ValueError(
                "ActivationCache.apply_final_norm: expected a NamedArray with an 'embedding' axis,"
                f" got {getattr(stack, 'named_shape', type(stack).__name__)}."
            )
        if self.final_norm_scale is None:
            raise ValueError(
                "ActivationCache.apply_final_norm: this cache has no final-norm scale; make it"
                " with run_with_cache."
            )
        value = stack.astype(jnp.promote_types(stack.dtype, jnp.float32))
        if self.final_norm_centers:
            value = value - nx.nmap(jnp.mean)(value.untag("embedding"))
        value = value * self.final_norm_scale
        affine = list(self.final_norm_affine or [])
        scale, shifts = affine[:1], affine[1:]
        for layer in scale:
            value = layer(value)
        if add_bias:
            for layer in shifts:
                value = layer(value)
        return value


def post_attention_norms(model: Any) -> tuple[Any, ...] | None:
    """What `ActivationCache.head_results` needs to freeze post-attention norms.

    For a model with hook points, one entry per block: None where the block
    has no norm after its attention, else `(scale, epsilon)` of that norm
    (`scale` is its learned multiplier over `embedding`, sliced to the block
    inside a `LayerStack`). None when the model has no post-attention norm,
    or when one of them is not a shift-free RMS norm over `embedding`
    following an output projection without bias.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.interp import _cache
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11, use_post_attn_norm=True)
      >>> lm = sk.interp.with_hook_points(
      ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)))
      >>> (scale, epsilon), = _cache.post_attention_norms(lm)
      >>> scale.named_shape, round(float(epsilon), 12) == cfg.rms_norm_eps
      ({'embedding': 8}, True)
    """
    attention = (nn.Attention, nn.KVCachingAttention)
    norms = (nn.LayerNorm, nn.RMSLayerNorm)
    entries: dict[int, Any] = {}
    num_layers = 0
    for hook in select(model).at_instances_of(HookPoint).get_sequence():
        if hook.site == "resid_pre":
            num_layers += len(hook.names)

    def norm_after_attention(node: Any) -> bool:
        layers = getattr(node, "sublayers", None)
        if not isinstance(node, nn.Sequential) or not layers:
            return False
        at = [i for i, x in enumerate(layers) if isinstance(x, attention)]
        return bool(at) and any(isinstance(x, norms) for x in layers[at[0] + 1 :])

    branches = select(model).at_subtrees_where(norm_after_attention).get_sequence()
    if not branches:
        return None
    for branch in branches:
        layers = list(branch.sublayers)
        at = [i for i, x in enumerate(layers) if isinstance(x, attention)]
        after = [x for x in layers[at[0] + 1 :] if isinstance(x, norms)]
        norm = after[0]
        hooks = [
            h
            for h in select(branch).at_instances_of(HookPoint).get_sequence()
            if h.site == "attn_out"
        ]
        projections = select(layers[at[0]]).at_instances_of(HeadResultSite).get_sequence()
        standardize = norm.sublayers[0] if norm.sublayers else None
        if (
            not isinstance(norm, nn.RMSLayerNorm)
            or not isinstance(standardize, nn.RMSStandardize)
            or standardize.across not in ("embedding", ("embedding",))
            or len(norm.sublayers) != 2
            or len(hooks) != 1
            or len(projections) != 1
            or not isinstance(projections[0].projection, nn.Linear)
        ):
            return None
        hook = hooks[0]
        # The multiplier over `embedding` (with the stack axis inside a LayerStack): the
        # scale layer applied to ones shaped like its parameters.
        axes: dict[Any, int] = {}
        for leaf in jax.tree_util.tree_leaves(norm.sublayers[1], is_leaf=nx.is_namedarray):
            value = getattr(leaf, "value", leaf)
            if nx.is_namedarray(value):
                axes.update(value.named_shape)
        if "embedding" not in axes:
            return None
        scale = norm.sublayers[1](nx.ones(axes, jnp.float32))
        if set(scale.named_shape) - {"embedding", hook.stack_axis}:
            return None
        epsilon = jnp.asarray(standardize.epsilon, jnp.float32)
        if hook.layers is None:
            entries[hook.current_layer()] = (scale, epsilon)
            continue
        for s, index in enumerate(hook.layers):
            sliced = scale
            if hook.stack_axis in scale.named_shape:
                sliced = scale[{hook.stack_axis: s}]
            eps = epsilon[s] if epsilon.ndim else epsilon
            entries[index] = (sliced, eps)
    return tuple(entries.get(i) for i in range(num_layers))
