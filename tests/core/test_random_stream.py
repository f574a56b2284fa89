"""Tests for RandomStream."""

import jax
import numpy as np
import pytest

from saikei import sk


def _data(key):
    return np.asarray(jax.random.key_data(key))


def test_from_base_key_starts_at_zero_with_label():
    stream = sk.RandomStream.from_base_key(jax.random.key(0), offset_label="drop")
    assert stream.offset.label == "drop"
    assert int(stream.offset.value) == 0


def test_default_offset_label():
    assert sk.RandomStream.from_base_key(jax.random.key(0)).offset.label == "random_stream_offset"


def test_next_key_folds_in_offset_and_advances():
    base = jax.random.key(3)
    stream = sk.RandomStream.from_base_key(base)
    keys = [stream.next_key() for _ in range(3)]
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(_data(key), _data(jax.random.fold_in(base, i)))
    assert int(stream.offset.value) == 3


def test_streams_with_same_key_are_reproducible():
    first = sk.RandomStream.from_base_key(jax.random.key(7))
    second = sk.RandomStream.from_base_key(jax.random.key(7))
    for _ in range(3):
        np.testing.assert_array_equal(_data(first.next_key()), _data(second.next_key()))


def test_consecutive_keys_differ():
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    assert not np.array_equal(_data(stream.next_key()), _data(stream.next_key()))


def test_raw_prng_key_works():
    base = jax.random.PRNGKey(1)
    stream = sk.RandomStream.from_base_key(base)
    np.testing.assert_array_equal(stream.next_key(), jax.random.fold_in(base, 0))


def test_under_variable_jit_matches_eager():
    eager = sk.RandomStream.from_base_key(jax.random.key(5))
    jitted = sk.RandomStream.from_base_key(jax.random.key(5))
    draw = sk.variable_jit(lambda stream: jax.random.uniform(stream.next_key(), (2,)))
    for _ in range(2):
        expected = jax.random.uniform(eager.next_key(), (2,))
        np.testing.assert_array_equal(draw(jitted), expected)
    assert int(jitted.offset.value) == 2


def test_under_jax_jit_with_unbind_and_bind():
    stream = sk.RandomStream.from_base_key(jax.random.key(2))
    slots, states = sk.unbind_state_vars(stream, freeze=True)

    @jax.jit
    def draw(states):
        inner = sk.bind_variables(slots, states, unfreeze_as_copy=True)
        key = inner.next_key()
        return key, sk.unbind_state_vars(inner, freeze=True)[1]

    key, new_states = draw(states)
    stream.offset.update(new_states[0])
    np.testing.assert_array_equal(_data(key), _data(jax.random.fold_in(jax.random.key(2), 0)))
    assert int(stream.offset.value) == 1


def test_unbound_offset_is_an_error():
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    slots, _ = sk.unbind_variables(stream)
    with pytest.raises(TypeError, match="StateVariable"):
        slots.next_key()


def test_stream_is_a_pytree_with_key_and_offset_variable():
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    leaves = jax.tree_util.tree_leaves(stream)
    assert leaves[1] is stream.offset
