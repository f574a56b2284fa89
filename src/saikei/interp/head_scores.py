"""Attention-head scores from cached attention patterns: `{layer, heads}` grids.

Each score is the attention weight a head puts on one particular earlier
token, averaged over the batch and over every query that has such a token:

* `previous_token(cache)`: the token just before the query (`q - 1`),
  averaged over queries at position >= 1;
* `duplicate_token(cache, period)`: the earlier copy of the query's token
  in a sequence that repeats with `period` (`q - period`);
* `induction(cache, period)`: the token after that earlier copy
  (`q - period + 1`), what an induction head attends to.

For `duplicate_token` and `induction` the tokens are `prefix` tokens (e.g. a
BOS token) followed by a block of `period` tokens repeated, and only queries
in the repeats (position >= `prefix + period`) count. Positions come from
`token_positions` (left padding: -1, never counted); by default the tokens
are unpadded (`0, 1, ...`). Patterns are `cache["blocks.{i}.attn.pattern"]`
with axes `{batch..., heads, seq, kv_seq}` (from `interp.run_with_cache`
on an uncached model).

Example (patterns usually come from `interp.run_with_cache(lm, tokens,
names="attn.pattern")`; here one head that always reads the previous token):

  >>> import jax.numpy as jnp
  >>> from saikei import interp, sk
  >>> previous = jnp.eye(6, k=-1).at[0, 0].set(1.0)
  >>> pattern = sk.nx.wrap(jnp.stack([previous, jnp.eye(6)])[None], "layer", "heads",
  ...     "seq", "kv_seq")
  >>> interp.head_scores.previous_token(pattern).unwrap("layer", "heads").tolist()
  [[1.0, 0.0]]
  >>> interp.head_scores.induction(pattern, period=3).named_shape
  {'layer': 1, 'heads': 2}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from saikei.core import named_axes as nx

_PATTERN_NAME = re.compile(r"blocks\.(\d+)\.attn\.pattern")


def _patterns(cache: Any, where: str) -> nx.NamedArray:
    """The attention patterns stacked along `layer` (or one pattern as given)."""
    if nx.is_namedarray(cache):
        pattern = cache
    elif isinstance(cache, Mapping):
        found = {}
        for name in cache:
            match = _PATTERN_NAME.fullmatch(name)
            if match:
                found[int(match.group(1))] = name
        if not found:
            raise ValueError(
                f"{where}: the cache holds no attention patterns; record them with"
                " interp.run_with_cache(model, tokens, names='attn.pattern')."
            )
        missing = sorted(set(range(max(found) + 1)) - set(found))
        if missing:
            raise ValueError(
                f"{where}: the cache lacks the patterns of blocks {missing}; cache every block's"
                " pattern (names='attn.pattern') for a grid over all layers."
            )
        pattern = nx.stack([cache[found[i]] for i in sorted(found)], "layer")
    else:
        raise TypeError(
            f"{where}: expected an ActivationCache (or a pattern NamedArray), got"
            f" {type(cache).__name__}."
        )
    shape = pattern.named_shape
    for axis in ("heads", "seq", "kv_seq"):
        if axis not in shape:
            raise ValueError(
                f"{where}: attention patterns need the axes 'heads', 'seq' and 'kv_seq', got"
                f" {shape}."
            )
    if shape["seq"] != shape["kv_seq"]:
        raise ValueError(
            f"{where}: the patterns have seq={shape['seq']} queries but kv_seq={shape['kv_seq']}"
            " keys; head scores need the patterns of a whole sequence (an uncached run)."
        )
    return pattern


def _score(
    cache: Any,
    offset: int,
    first_position: int,
    token_positions: nx.NamedArray | None,
    where: str,
) -> nx.NamedArray:
    """Mean of `pattern[q, q - offset]` over batch and queries at positions >= `first_position`."""
    pattern = _patterns(cache, where)
    seq = pattern.named_shape["seq"]
    if offset >= seq:
        raise ValueError(
            f"{where}: the sequence has {seq} tokens, too few for a key {offset} tokens before"
            " the query; use a longer sequence (e.g. the repeated block twice)."
        )
    if token_positions is None:
        token_positions = nx.arange("seq", seq)
    if not nx.is_namedarray(token_positions) or "seq" not in token_positions.named_shape:
        raise ValueError(
            f"{where}: token_positions must be a NamedArray over 'seq', got {token_positions!r}."
        )
    # The weight each query puts on the key `offset` places before it.
    diagonal = nx.nmap(lambda a: jnp.diagonal(a, offset=-offset))(pattern.untag("seq", "kv_seq"))
    diagonal = diagonal.tag("query")
    positions = nx.nmap(lambda p: p[offset:])(token_positions.untag("seq")).tag("query")
    counted = nx.nmap(lambda p: (p >= first_position).astype(jnp.float32))(positions)
    weighted = diagonal.astype(jnp.float32) * counted
    keep = {"layer", "heads"}
    over = [n for n in weighted.named_shape if n not in keep]
    total = nx.nmap(jnp.sum)(weighted.untag(*over))
    count_over = [n for n in counted.named_shape]
    # Every batch axis of the pattern counts each query once per batch entry.
    batch = [n for n in over if n not in counted.named_shape]
    repeats = 1
    for n in batch:
        repeats *= weighted.named_shape[n]
    count = nx.nmap(jnp.sum)(counted.untag(*count_over)) * repeats
    return total / nx.nmap(lambda c: jnp.maximum(c, 1.0))(count)


def _check_int(value: Any, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}.")
    return value


def previous_token(cache: Any, *, token_positions: nx.NamedArray | None = None) -> nx.NamedArray:
    """How much each head attends to the token just before the query: a `{layer, heads}` grid.

    Args:
      cache: An `ActivationCache` with `blocks.{i}.attn.pattern` for every
        block, or one pattern NamedArray (`{..., heads, seq, kv_seq}`).
      token_positions: The tokens' positions (-1 for padding), as given to
        the model; None for unpadded tokens.

    Returns:
      The mean attention weight on key `q - 1` over the batch and over the
      queries at position >= 1, with axes `layer` (if the input has layers)
      and `heads`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import interp, sk
      >>> shifted = jnp.eye(4, k=-1).at[0, 0].set(1.0)  # each query reads the previous token
      >>> pattern = sk.nx.wrap(shifted[None], "heads", "seq", "kv_seq")
      >>> interp.head_scores.previous_token(pattern).unwrap("heads").tolist()
      [1.0]
    """
    return _score(cache, 1, 1, token_positions, "interp.head_scores.previous_token")


def duplicate_token(
    cache: Any,
    period: int,
    *,
    prefix: int = 0,
    token_positions: nx.NamedArray | None = None,
) -> nx.NamedArray:
    """How much each head attends to the earlier copy of the query's token: `{layer, heads}`.

    Args:
      cache: An `ActivationCache` with every block's `attn.pattern`, or one
        pattern NamedArray, from tokens that are `prefix` tokens followed by a
        block of `period` tokens repeated.
      period: The length of the repeated block.
      prefix: How many tokens come before the first block (e.g. 1 for BOS).
      token_positions: The tokens' positions (-1 for padding); None for
        unpadded tokens.

    Returns:
      The mean attention weight on key `q - period` over the batch and the
      queries at position >= `prefix + period`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import interp, sk
      >>> pattern = sk.nx.wrap(jnp.eye(6, k=-3)[None], "heads", "seq", "kv_seq")
      >>> interp.head_scores.duplicate_token(pattern, period=3).unwrap("heads").tolist()
      [1.0]
    """
    where = "interp.head_scores.duplicate_token"
    period = _check_int(period, "period", where, 1)
    prefix = _check_int(prefix, "prefix", where, 0)
    return _score(cache, period, prefix + period, token_positions, where)


def induction(
    cache: Any,
    period: int,
    *,
    prefix: int = 0,
    token_positions: nx.NamedArray | None = None,
) -> nx.NamedArray:
    """How much each head attends to the token after the earlier copy of the query's: `{layer, heads}`.

    Args:
      cache: An `ActivationCache` with every block's `attn.pattern`, or one
        pattern NamedArray, from tokens that are `prefix` tokens followed by a
        block of `period` tokens repeated (at least twice).
      period: The length of the repeated block (at least 2).
      prefix: How many tokens come before the first block (e.g. 1 for BOS).
      token_positions: The tokens' positions (-1 for padding); None for
        unpadded tokens.

    Returns:
      The mean attention weight on key `q - period + 1` over the batch and
      the queries at position >= `prefix + period`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import interp, sk
      >>> pattern = sk.nx.wrap(jnp.eye(6, k=-2)[None], "heads", "seq", "kv_seq")
      >>> interp.head_scores.induction(pattern, period=3).unwrap("heads").tolist()
      [1.0]
    """
    where = "interp.head_scores.induction"
    period = _check_int(period, "period", where, 2)
    prefix = _check_int(prefix, "prefix", where, 0)
    return _score(cache, period - 1, prefix + period, token_positions, where)
