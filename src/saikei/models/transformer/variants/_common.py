"""Pieces every transformer builder in `variants` shares.

Each family builds its blocks its own way, but all of them project with or
without a bias, embed tokens through one table, decode logits with that table
or an untied `lm_head`, and describe the result with the same metadata. The
builders' configs differ, yet all have the fields `BuilderConfig` lists.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from saikei import nn
from saikei.models.transformer import model_parts

# The attention logit that masked positions get.
MASKED = -2.3819763e38


class BuilderConfig(Protocol):
    """The fields of a builder config that the helpers here read."""

    vocab_size: int
    embedding_dim: int
    mlp_hidden_dim: int
    tie_embedder_and_logits: bool
    parameter_dtype: Any
    activation_dtype: Any

    @property
    def projection_dim(self) -> int: ...


def projection(
    name: str,
    rng: jax.Array | None,
    in_axes: dict[str, int],
    out_axes: dict[str, int],
    bias: bool,
    dtype: Any,
) -> nn.Affine | nn.Linear:
    """A learned projection from `in_axes` to `out_axes`: `nn.Affine` if `bias`, else `nn.Linear`.

    The labels are `{name}/Linear.weights` and `{name}/AddBias.bias` with a
    bias, `{name}.weights` without.

    Example:
      >>> import jax
      >>> from saikei.models.transformer.variants import _common
      >>> layer = _common.projection("p", jax.random.key(0), {"a": 2}, {"b": 3}, False, "float32")
      >>> type(layer).__name__, layer.weights.label
      ('Linear', 'p.weights')
    """
    if bias:
        return nn.Affine.from_config(name, rng, in_axes, out_axes, dtype=dtype)
    return nn.Linear.from_config(name, rng, in_axes, out_axes, dtype=dtype)


def query_scale(config: Any) -> float:
    """What queries are multiplied by: `projection_dim ** -0.5` for "default", else the factor.

    Example:
      >>> import types
      >>> from saikei.models.transformer.variants import _common
      >>> _common.query_scale(types.SimpleNamespace(query_scaling_factor="default",
      ...     projection_dim=16))
      0.25
    """
    if config.query_scaling_factor == "default":
        return config.projection_dim**-0.5
    return float(config.query_scaling_factor)


def scalar_in(value: float, dtype: Any) -> float:
    """`value` rounded to `dtype`, as a Python float (so models hold no arrays but weights).

    A Python float keeps a model's rendered source executable (treescope's
    roundtrip mode) and multiplies an array of `dtype` exactly as the rounded
    array scalar would.

    Example:
      >>> from saikei.models.transformer.variants import _common
      >>> _common.scalar_in(1 / 3, "bfloat16")
      0.333984375
    """
    return float(jnp.asarray(value, dtype))


def token_embedder(
    name: str, init_base_rng: jax.Array | None, config: BuilderConfig
) -> nn.EmbeddingTable:
    """The token embedding table, labelled `{name}/embedder`.

    Example:
      >>> import types
      >>> import jax
      >>> from saikei.models.transformer.variants import _common
      >>> cfg = types.SimpleNamespace(vocab_size=5, embedding_dim=3, parameter_dtype="float32")
      >>> _common.token_embedder("m", jax.random.key(0), cfg).embeddings.value.named_shape
      {'vocabulary': 5, 'embedding': 3}
    """
    return nn.EmbeddingTable.from_config(
        f"{name}/embedder",
        init_base_rng,
        config.vocab_size,
        {"embedding": config.embedding_dim},
        dtype=config.parameter_dtype,
    )


def to_activation_dtype(config: BuilderConfig) -> list[nn.Layer]:
    """A cast to the activation dtype when it differs from the parameter dtype, else nothing.

    Example:
      >>> import types
      >>> from saikei.models.transformer.variants import _common
      >>> cfg = types.SimpleNamespace(parameter_dtype="float32", activation_dtype="bfloat16")
      >>> [type(layer).__name__ for layer in _common.to_activation_dtype(cfg)]
      ['CastToDType']
    """
    if config.activation_dtype != config.parameter_dtype:
        return [nn.CastToDType(config.activation_dtype)]
    return []


def unembedding(
    name: str,
    init_base_rng: jax.Array | None,
    config: BuilderConfig,
    table: nn.EmbeddingTable,
) -> nn.Layer:
    """Logits from the residual stream: decoded with `table` if tied, else an `{name}/lm_head`.

    Example:
      >>> import types
      >>> import jax
      >>> from saikei.models.transformer.variants import _common
      >>> cfg = types.SimpleNamespace(vocab_size=5, embedding_dim=3, parameter_dtype="float32",
      ...     tie_embedder_and_logits=False)
      >>> table = _common.token_embedder("m", jax.random.key(0), cfg)
      >>> _common.unembedding("m", jax.random.key(0), cfg, table).weights.label
      'm/lm_head.weights'
    """
    if config.tie_embedder_and_logits:
        return nn.EmbeddingDecode(table)
    return nn.Linear.from_config(
        f"{name}/lm_head",
        init_base_rng,
        {"embedding": config.embedding_dim},
        {"vocabulary": config.vocab_size},
        dtype=config.parameter_dtype,
    )


def transformer_lm(
    layers: list[Any],
    config: BuilderConfig,
    common_head_axes: dict[str, int],
    query_only_head_axes: dict[str, int],
) -> model_parts.TransformerLM:
    """`layers` in sequence as a `TransformerLM`, with metadata read from `config`.

    Example:
      >>> import types
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import _common
      >>> cfg = types.SimpleNamespace(embedding_dim=8, projection_dim=4, mlp_hidden_dim=16,
      ...     vocab_size=5, activation_dtype="float32")
      >>> lm = _common.transformer_lm([sk.nn.Identity()], cfg, {"heads": 2}, {})
      >>> lm.metadata.common_head_axes, lm.metadata.config is cfg
      ({'heads': 2}, True)
    """
    metadata = model_parts.TransformerMetadata(
        common_head_axes=common_head_axes,
        query_only_head_axes=query_only_head_axes,
        embedding_dim=config.embedding_dim,
        projection_dim=config.projection_dim,
        mlp_hidden_dim=config.mlp_hidden_dim,
        vocab_size=config.vocab_size,
        activation_dtype=config.activation_dtype,
        config=config,
    )
    return model_parts.TransformerLM(body=nn.Sequential(layers), metadata=metadata)
