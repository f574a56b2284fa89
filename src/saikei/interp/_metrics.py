"""Metrics on logits for patching: `logit_diff`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from saikei.core import named_axes as nx
from saikei.core._struct import Struct, pytree_dataclass


def _ids(value: Any, what: str) -> Any:
    if nx.is_namedarray(value):
        if value.positional_shape or not jnp.issubdtype(value.dtype, jnp.integer):
            raise TypeError(
                f"interp.logit_diff: {what} must be an int or an integer NamedArray over batch"
                f" axes, got {value!r}."
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"interp.logit_diff: {what} must be an int or an integer NamedArray over batch axes"
            f" (one token id per example), got {value!r}."
        )
    return nx.wrap(jnp.asarray(value, jnp.int32))


@pytree_dataclass
class LogitDiff(Struct):
    """The metric `interp.logit_diff` makes: mean of `logits[correct] - logits[wrong]`.

    Attributes:
      correct_id: Token id (int32 NamedArray, 0-d or over batch axes).
      wrong_id: Token id (same form).
      position: Which `seq` index to read (-1: the last).

    Example:
      >>> from saikei import interp, sk
      >>> import jax.numpy as jnp
      >>> logits = sk.nx.wrap(jnp.array([[0.0, 1.0, 3.0]]), "seq", "vocabulary")
      >>> float(interp.logit_diff(2, 1)(logits))
      2.0
    """

    correct_id: Any
    wrong_id: Any
    position: int = dataclasses.field(default=-1, metadata={"pytree_node": False})

    def __call__(self, logits: nx.NamedArray) -> jax.Array:
        """The mean logit difference at `position` over every batch axis, a float32 scalar."""
        if not nx.is_namedarray(logits) or not {"seq", "vocabulary"} <= set(logits.named_shape):
            raise ValueError(
                "interp.logit_diff: expected logits with 'seq' and 'vocabulary' axes, got"
                f" {getattr(logits, 'named_shape', type(logits).__name__)}."
            )
        at = nx.nmap(lambda a: a[self.position])(logits.untag("seq")).astype(jnp.float32)

        def pick(ids: nx.NamedArray) -> nx.NamedArray:
            return nx.nmap(lambda row, i: row[i])(at.untag("vocabulary"), ids)

        diff = pick(self.correct_id) - pick(self.wrong_id)
        return jnp.mean(diff.unwrap(*diff.named_shape)) if diff.named_shape else diff.unwrap()


def logit_diff(correct_id: Any, wrong_id: Any, *, position: int = -1) -> LogitDiff:
    """A metric for patching: the mean of `logits[correct_id] - logits[wrong_id]` at one position.

    Args:
      correct_id: The token that should win: an int, or an integer NamedArray
        with one id per example (over the logits' batch axes).
      wrong_id: The token it competes with (same form).
      position: The `seq` index to read the logits at (default -1, the last;
        with left padding the last position is the last real token).

    Returns:
      A `LogitDiff`, a function from logits (`{batch..., seq, vocabulary}`)
      to a float32 scalar (the mean over every batch axis). It is a pytree,
      so different token ids never recompile a patching run.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import interp, sk
      >>> logits = sk.nx.wrap(jnp.array([[[1.0, 0.0]], [[0.0, 3.0]]]), "batch", "seq", "vocabulary")
      >>> metric = interp.logit_diff(sk.nx.wrap(jnp.array([0, 1]), "batch"),
      ...     sk.nx.wrap(jnp.array([1, 0]), "batch"))
      >>> float(metric(logits))
      2.0
    """
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"interp.logit_diff: position must be an int, got {position!r}.")
    return LogitDiff(_ids(correct_id, "correct_id"), _ids(wrong_id, "wrong_id"), position)
