"""`interp.head_scores` against a numpy oracle of the documented definitions."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import interp, sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from tests.models._hf_helpers import TINY_LLAMA, random_hf_model  # noqa: E402

PERIOD = 5
BLOCK = np.random.default_rng(3).integers(1, 64, size=(2, PERIOD))
# A BOS-like token, then the block twice.
TOKENS = np.concatenate([np.zeros((2, 1), np.int64), BLOCK, BLOCK], axis=1)


@pytest.fixture(scope="module")
def lm():
    model = random_hf_model(
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(TINY_LLAMA, num_key_value_heads=2),
        sharpen={"q_proj.weight": 6.0},
    )
    return _families.from_huggingface_model(model, use_layer_stack=True)


def _oracle(patterns, offset, first_position, positions):
    """`patterns`: (layer, batch, heads, q, k); mean of A[q, q - offset] over counted (b, q)."""
    layers, batch, heads, seq, _ = patterns.shape
    out = np.zeros((layers, heads))
    for layer in range(layers):
        for head in range(heads):
            total, count = 0.0, 0
            for b in range(batch):
                for q in range(offset, seq):
                    if positions[b, q] >= first_position:
                        total += patterns[layer, b, head, q, q - offset]
                        count += 1
            out[layer, head] = total / count
    return out


def _numpy_patterns(cache, layers=2):
    return np.stack(
        [
            np.asarray(cache[f"blocks.{i}.attn.pattern"].unwrap("batch", "heads", "seq", "kv_seq"))
            for i in range(layers)
        ]
    )


def test_scores_match_the_numpy_definition(lm):
    tokens = sk.nx.wrap(jnp.asarray(TOKENS), "batch", "seq")
    _, cache = interp.run_with_cache(lm, tokens, names="attn.pattern")
    patterns = _numpy_patterns(cache)
    positions = np.tile(np.arange(TOKENS.shape[1]), (2, 1))
    cases = {
        "previous_token": (interp.head_scores.previous_token(cache), 1, 1),
        "duplicate_token": (
            interp.head_scores.duplicate_token(cache, PERIOD, prefix=1),
            PERIOD,
            1 + PERIOD,
        ),
        "induction": (
            interp.head_scores.induction(cache, PERIOD, prefix=1),
            PERIOD - 1,
            1 + PERIOD,
        ),
    }
    for name, (ours, offset, first) in cases.items():
        assert ours.named_shape == {"layer": 2, "heads": 4}, name
        np.testing.assert_allclose(
            np.asarray(ours.unwrap("layer", "heads")),
            _oracle(patterns, offset, first, positions),
            atol=1e-6,
            err_msg=name,
        )


def test_left_padding_with_positions_gives_the_unpadded_scores(lm):
    padded = np.concatenate([np.zeros((2, 3), np.int64), TOKENS], axis=1)
    positions = np.concatenate(
        [-np.ones((2, 3), np.int64), np.tile(np.arange(TOKENS.shape[1]), (2, 1))], axis=1
    )
    named_positions = sk.nx.wrap(jnp.asarray(positions), "batch", "seq")
    _, cache = interp.run_with_cache(
        lm,
        sk.nx.wrap(jnp.asarray(padded), "batch", "seq"),
        names="attn.pattern",
        token_positions=named_positions,
    )
    _, plain = interp.run_with_cache(
        lm, sk.nx.wrap(jnp.asarray(TOKENS), "batch", "seq"), names="attn.pattern"
    )
    for score in (
        lambda c, **kw: interp.head_scores.previous_token(c, **kw),
        lambda c, **kw: interp.head_scores.induction(c, PERIOD, prefix=1, **kw),
        lambda c, **kw: interp.head_scores.duplicate_token(c, PERIOD, prefix=1, **kw),
    ):
        np.testing.assert_allclose(
            np.asarray(score(cache, token_positions=named_positions).unwrap("layer", "heads")),
            np.asarray(score(plain).unwrap("layer", "heads")),
            atol=1e-6,
        )


def test_hand_made_heads_get_their_known_scores():
    period, prefix = 3, 1
    seq = prefix + 2 * period
    previous = np.eye(seq, k=-1)
    previous[0, 0] = 1.0
    induction = np.eye(seq)
    duplicate = np.eye(seq)
    for q in range(prefix + period, seq):
        induction[q] = 0.0
        induction[q, q - period + 1] = 1.0
        duplicate[q] = 0.0
        duplicate[q, q - period] = 1.0
    bos = np.zeros((seq, seq))
    bos[:, 0] = 1.0
    pattern = sk.nx.wrap(
        jnp.asarray(np.stack([previous, induction, duplicate, bos])), "heads", "seq", "kv_seq"
    )
    scores = interp.head_scores
    np.testing.assert_allclose(
        np.asarray(scores.previous_token(pattern).unwrap("heads")), [1.0, 0.0, 0.0, 1 / 6]
    )
    np.testing.assert_allclose(
        np.asarray(scores.induction(pattern, period, prefix=prefix).unwrap("heads")),
        [0.0, 1.0, 0.0, 0.0],
    )
    np.testing.assert_allclose(
        np.asarray(scores.duplicate_token(pattern, period, prefix=prefix).unwrap("heads")),
        [0.0, 0.0, 1.0, 0.0],
    )


def test_missing_patterns_and_bad_periods_are_errors(lm):
    tokens = sk.nx.wrap(jnp.asarray(TOKENS), "batch", "seq")
    _, resid = interp.run_with_cache(lm, tokens, names="resid_pre")
    with pytest.raises(ValueError, match="holds no attention patterns"):
        interp.head_scores.previous_token(resid)
    _, one = interp.run_with_cache(lm, tokens, names="blocks.1.attn.pattern")
    with pytest.raises(ValueError, match=r"lacks the patterns of blocks \[0\]"):
        interp.head_scores.previous_token(one)
    with pytest.raises(ValueError, match="period must be an int >= 2"):
        interp.head_scores.induction(one["blocks.1.attn.pattern"], 1)
    with pytest.raises(ValueError, match="too few"):
        interp.head_scores.duplicate_token(one["blocks.1.attn.pattern"], 50)
