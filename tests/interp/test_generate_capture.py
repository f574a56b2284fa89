"""generate(..., capture=names): activations of every step, against uncached run_with_cache."""

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from saikei import sk
from saikei.models.transformer import sampling
from tests.interp._tiny import tiny_lm

interp = sk.interp
NEW = 4


def _prompt():
    ids = jnp.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    return sk.nx.wrap(ids, "batch", "seq")


@pytest.mark.parametrize("which", ["llama_list", "gemma2_stack"])
def test_captured_steps_equal_the_uncached_forward_pass(which):
    lm = tiny_lm(which)
    prompt = _prompt()
    names = ["resid_post", "attn.pattern", "attn.z", "logits"]
    tokens, captured = sampling.generate(
        lm, prompt, max_new_tokens=NEW, temperature=0.0, capture=names
    )
    plain = sampling.generate(lm, prompt, max_new_tokens=NEW, temperature=0.0)
    np.testing.assert_array_equal(np.asarray(tokens.data_array), np.asarray(plain.data_array))

    # The whole sequence the cache ends up holding, run at once without a cache.
    ids = np.concatenate(
        [np.asarray(prompt.unwrap("batch", "seq")), np.asarray(tokens.unwrap("batch", "seq"))], 1
    )[:, :-1]
    pads = np.array([[2], [0]])  # leading pads of each prompt row
    positions = np.arange(ids.shape[1])[None, :] - pads
    positions[positions < 0] = -1
    _, cache = interp.run_with_cache(
        lm,
        sk.nx.wrap(jnp.asarray(ids), "batch", "seq"),
        names=names,
        token_positions=sk.nx.wrap(jnp.asarray(positions), "batch", "seq"),
    )
    assert list(captured) == list(cache)
    start = prompt.named_shape["seq"] - 1
    for name, steps in captured.items():
        assert steps.named_shape["step"] == NEW
        for s in range(NEW):
            want = cache[name][{"seq": start + s}]
            got = steps[{"step": s}]
            diff = float(jnp.abs((got - want).data_array).max())
            assert diff < 1e-4, (name, s, diff)


def test_captured_logits_give_the_greedy_tokens():
    tokens, captured = sampling.generate(
        tiny_lm("mqa_stack"), _prompt(), max_new_tokens=NEW, temperature=0.0, capture="logits"
    )
    chosen = np.argmax(np.asarray(captured["logits"].unwrap("batch", "step", "vocabulary")), -1)
    np.testing.assert_array_equal(chosen, np.asarray(tokens.unwrap("batch", "seq")))


def test_capture_of_unknown_name_is_an_error():
    with pytest.raises(ValueError, match="no hook point matches"):
        sampling.generate(
            tiny_lm("llama_list"), _prompt(), max_new_tokens=2, temperature=0.0, capture="nope"
        )


def test_cached_model_without_hook_points_cannot_capture():
    cached = sampling.KVCachingTransformerLM.from_uncached(
        tiny_lm("llama_list"), cache_len=8, batch_axes={"batch": 2}
    )
    with pytest.raises(ValueError, match="needs hook points"):
        sampling.generate(cached, _prompt(), max_new_tokens=2, temperature=0.0, capture="embed")


def test_cached_model_with_hook_points_captures_and_keeps_its_cache():
    lm = interp.with_hook_points(tiny_lm("llama_list"))
    cached = sampling.KVCachingTransformerLM.from_uncached(
        lm, cache_len=12, batch_axes={"batch": 2}
    )
    tokens, captured = sampling.generate(
        cached, _prompt(), max_new_tokens=3, temperature=0.0, capture="logits"
    )
    assert int(cached.cache_end_index.value) == 5 + 3 - 1
    chosen = np.argmax(np.asarray(captured["logits"].unwrap("batch", "step", "vocabulary")), -1)
    np.testing.assert_array_equal(chosen, np.asarray(tokens.unwrap("batch", "seq")))
