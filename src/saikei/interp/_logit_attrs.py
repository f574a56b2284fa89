"""`logit_attrs`: how much each piece of the residual stream adds to chosen logits."""

from __future__ import annotations

import jax.numpy as jnp

from saikei import nn
from saikei.core import named_axes as nx
from saikei.models.transformer import model_parts
from saikei.models.transformer._hook_points import HookPoint


def unembedding_matrix(model: model_parts.TransformerLM) -> nx.NamedArray:
    """The unembedding `W_U` of `model`, with axes `embedding` and `vocabulary`.

    It is the embedding table for tied models, else the `lm_head` weights.
    Gemma's final logit soft cap comes after it and is not included.

    Example:
      >>> import jax
      >>> from saikei.interp import _logit_attrs
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> _logit_attrs.unembedding_matrix(lm).named_shape
      {'embedding': 8, 'vocabulary': 11}
    """
    where = "logit_attrs"
    if not isinstance(model, model_parts.TransformerLM) or not isinstance(
        model.body, nn.Sequential
    ):
        raise TypeError(f"{where}: expected a TransformerLM, got {type(model).__name__}.")
    layers = [x for x in model.body.sublayers if not isinstance(x, HookPoint)]
    norms = [i for i, x in enumerate(layers) if isinstance(x, nn.LayerNorm | nn.RMSLayerNorm)]
    if not norms or norms[-1] + 1 >= len(layers):
        raise ValueError(f"{where}: cannot find the final norm and the unembedding after it.")
    unembed = layers[norms[-1] + 1]
    if isinstance(unembed, nn.EmbeddingDecode):
        table = unembed.table
        value = table.embeddings.value
        if table.vocabulary_axis != "vocabulary":
            value = value.untag(table.vocabulary_axis).tag("vocabulary")
        return value
    if isinstance(unembed, nn.Linear):
        return unembed.weights.value
    raise ValueError(
        f"{where}: the layer after the final norm is a {type(unembed).__name__}; expected"
        " sk.nn.EmbeddingDecode (tied) or sk.nn.Linear (lm_head)."
    )


def logit_attrs(
    model: model_parts.TransformerLM, stack: nx.NamedArray, tokens_or_directions: nx.NamedArray
) -> nx.NamedArray:
    """The dot product of each residual piece with unembedding directions.

    Normalize the pieces first (`cache.apply_final_norm`, or
    `accumulated_resid(apply_final_norm=True)`): the attributions of pieces
    that sum to the normalized residual sum to the logit (before Gemma's
    final soft cap, and without the final norm's shift for LayerNorm models,
    whose contribution is `logit_attrs(model, shift, tokens)`).

    Args:
      model: The model whose unembedding gives the directions.
      stack: Residual pieces with an `embedding` axis, e.g. axes
        `layer`/`component`/`heads`, batch axes and `seq`.
      tokens_or_directions: Integer token ids (any axes; each picks its
        unembedding column), or float directions with an `embedding` axis
        (e.g. the difference of two tokens' columns).

    Returns:
      `stack` contracted over `embedding` with the directions, matching
      other axes by name.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> tokens = sk.nx.wrap(jax.numpy.array([1, 2, 3]), "seq")
      >>> logits, cache = sk.interp.run_with_cache(lm, tokens)
      >>> pieces = cache.decompose_resid(apply_final_norm=True)
      >>> attrs = sk.interp.logit_attrs(lm, pieces, tokens)  # each position's own token
      >>> attrs.named_shape
      {'seq': 3, 'component': 5}
      >>> total = sk.nx.nmap(lambda a: a.sum(0))(attrs.untag("component"))
      >>> own = sk.nx.nmap(lambda row, t: row[t])(logits.untag("vocabulary"), tokens)
      >>> float(abs(total - own).data_array.max()) < 1e-4
      True
    """
    where = "logit_attrs"
    if not nx.is_namedarray(stack) or "embedding" not in stack.named_shape:
        raise ValueError(
            f"{where}: stack must be a NamedArray with an 'embedding' axis, got"
            f" {getattr(stack, 'named_shape', type(stack).__name__)}."
        )
    if not nx.is_namedarray(tokens_or_directions):
        raise TypeError(
            f"{where}: tokens_or_directions must be a NamedArray of token ids or of directions"
            f" with an 'embedding' axis, got {type(tokens_or_directions).__name__}. Wrap ids,"
            " e.g. sk.nx.wrap(ids, 'batch')."
        )
    w_u = unembedding_matrix(model)
    if jnp.issubdtype(tokens_or_directions.dtype, jnp.integer):
        directions = nx.nmap(lambda column, t: column[t])(
            w_u.untag("vocabulary"), tokens_or_directions
        )
    elif "embedding" in tokens_or_directions.named_shape:
        directions = tokens_or_directions
    else:
        raise ValueError(
            f"{where}: float directions need an 'embedding' axis, got"
            f" {tokens_or_directions.named_shape}."
        )
    dtype = jnp.promote_types(stack.dtype, jnp.float32)
    return nn.contract("embedding", stack.astype(dtype), directions.astype(dtype))
