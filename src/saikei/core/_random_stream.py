"""`RandomStream`: a source of fresh PRNG keys whose position is a StateVariable."""

from __future__ import annotations

import jax

from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._variables_types import (
    StateVariable,
    StateVariableSlot,
    StateVariableValue,
    VariableLabel,
)


@pytree_dataclass
class RandomStream(Struct):
    """A stream of PRNG keys: `base_key` folded with a counter that advances.

    The counter lives in a `StateVariable`, so a stream can be passed as a side
    input to a model (e.g. for dropout) and used inside `sk.variable_jit`, or
    unbound and bound around `jax.jit` like any other state. Two streams with
    the same base key produce the same keys in the same order.

    Attributes:
      base_key: The key every draw derives from; it never changes.
      offset: StateVariable holding how many keys have been drawn so far.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> stream = sk.RandomStream.from_base_key(jax.random.key(0))
      >>> first = stream.next_key()
      >>> int(stream.offset.value)
      1
      >>> bool(jax.random.key_data(first).tolist()
      ...      == jax.random.key_data(jax.random.fold_in(jax.random.key(0), 0)).tolist())
      True
    """

    base_key: jax.Array
    offset: StateVariable[int | jax.Array] | StateVariableValue | StateVariableSlot

    @classmethod
    def from_base_key(
        cls,
        base_key: jax.Array,
        offset_label: VariableLabel = "random_stream_offset",
    ) -> RandomStream:
        """Starts a stream at offset 0.

        Args:
          base_key: A PRNG key (new-style `jax.random.key` or raw `PRNGKey`).
          offset_label: The label of the offset StateVariable; give streams
            that live in one model different labels.

        Returns:
          A new RandomStream with its own offset variable.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> sk.RandomStream.from_base_key(jax.random.key(1), "dropout").offset.label
          'dropout'
        """
        return cls(base_key=base_key, offset=StateVariable(0, label=offset_label))

    def next_key(self) -> jax.Array:
        """Returns `fold_in(base_key, offset)` and advances the offset by one.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> stream = sk.RandomStream.from_base_key(jax.random.key(0))
          >>> a, b = stream.next_key(), stream.next_key()
          >>> bool((jax.random.key_data(a) != jax.random.key_data(b)).any())
          True
        """
        offset = self.offset
        if not isinstance(offset, StateVariable):
            raise TypeError(
                f"RandomStream.next_key needs its offset to be a StateVariable, but"
                f" it is {offset!r}. Bind the offset variable back into the stream"
                " (`sk.bind_variables(..., unfreeze_as_copy=True)` for frozen values)"
                " before drawing keys."
            )
        current = offset.value
        key = jax.random.fold_in(self.base_key, current)
        offset.value = current + 1
        return key
