"""KV-cached decoding and the jitted generation loop, against uncached logits and HF `generate`."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import _families, model_parts, sampling  # noqa: E402
from saikei.models.transformer.variants import llamalike  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    TINY_LLAMA,
    TINY_SIZES,
    named_tokens,
    our_logits,
    random_hf_model,
)

# name -> (transformers class prefix, config kwargs)
_HF_CASES = {
    "llama_gqa": ("Llama", dict(TINY_LLAMA, num_key_value_heads=2)),
    "mistral_window3": ("Mistral", dict(TINY_LLAMA, num_key_value_heads=2, sliding_window=3)),
}


@functools.cache
def _hf_model(case: str):
    cls_name, kwargs = _HF_CASES[case]
    return random_hf_model(
        f"{cls_name}Config",
        f"{cls_name}ForCausalLM",
        kwargs,
        sharpen={"q_proj.weight": 8.0, "k_proj.weight": 8.0, "lm_head.weight": 20.0},
    )


@functools.cache
def _lm(case: str, use_layer_stack: bool) -> model_parts.TransformerLM:
    return _families.from_huggingface_model(_hf_model(case), use_layer_stack=use_layer_stack)


@functools.cache
def _built_lm(use_layer_stack: bool) -> model_parts.TransformerLM:
    cfg = llamalike.LlamalikeTransformerConfig(
        num_kv_heads=1,
        query_head_multiplier=2,
        embedding_dim=32,
        projection_dim=8,
        mlp_hidden_dim=48,
        num_decoder_blocks=2,
        vocab_size=64,
        use_layer_stack=use_layer_stack,
    )
    return llamalike.build_llamalike_transformer(cfg, jax.random.key(0))


def _tokens(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    # Never 0, the pad id in these tests.
    return np.random.default_rng(seed).integers(1, 64, size=(batch, seq)).astype(np.int32)


def _ids(tokens: sk.nx.NamedArray) -> np.ndarray:
    return np.asarray(tokens.unwrap("batch", "seq"))


_step = sk.variable_jit(lambda model, tokens: model(tokens))


def _hf_greedy(model, prompt: np.ndarray, max_new_tokens: int) -> np.ndarray:
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(
            torch.tensor(prompt, dtype=torch.long),
            attention_mask=torch.ones(prompt.shape, dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
        )
    return out[:, prompt.shape[1] :].numpy()


def _greedy(lm, prompt: np.ndarray, max_new_tokens: int, **kwargs) -> np.ndarray:
    return _ids(
        sampling.generate(
            lm, named_tokens(prompt), max_new_tokens=max_new_tokens, temperature=0.0, **kwargs
        )
    )


@functools.cache
def _uncached_forward():
    # One compiled forward over a fixed-length buffer: with causal attention,
    # the junk after the current length cannot change the logits before it.
    return sk.variable_jit(lambda lm, tokens: lm(tokens))


def _reference_greedy(lm, prompt: np.ndarray, max_new_tokens: int) -> np.ndarray:
    length = prompt.shape[1]
    buffer = np.zeros((prompt.shape[0], length + max_new_tokens), np.int32)
    buffer[:, :length] = prompt
    for i in range(max_new_tokens):
        logits = _uncached_forward()(lm, named_tokens(buffer)).unwrap("batch", "seq", "vocabulary")
        buffer[:, length + i] = np.argmax(np.asarray(logits)[:, length + i - 1], axis=-1)
    return buffer[:, length:]


# Cached logits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, use_layer_stack",
    [
        ("llama_gqa", False),
        ("llama_gqa", True),
        ("mistral_window3", False),
        ("mistral_window3", True),
        ("built_mqa", False),
    ],
    ids=["llama-list", "llama-stack", "mistral-list", "mistral-stack", "built-mqa-list"],
)
def test_cached_steps_match_uncached_logits(case, use_layer_stack):
    lm = _built_lm(use_layer_stack) if case == "built_mqa" else _lm(case, use_layer_stack)
    tokens = _tokens(2, 10)
    expected = our_logits(lm, tokens)
    cached = sampling.KVCachingTransformerLM.from_uncached(
        lm, cache_len=12, batch_axes={"batch": 2}
    )
    chunks = [tokens[:, :4], *(tokens[:, i : i + 1] for i in range(4, 10))]
    got = np.concatenate(
        [
            np.asarray(_step(cached, named_tokens(c)).unwrap("batch", "seq", "vocabulary"))
            for c in chunks
        ],
        axis=1,
    )
    # The sliding window (3) is shorter than the sequence (10): old keys must drop out.
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert int(cached.cache_end_index.value) == 10
    np.testing.assert_array_equal(
        np.asarray(cached.kv_token_positions.value.unwrap("batch", "seq")),
        np.tile(np.r_[np.arange(10), -1, -1], (2, 1)),
    )


def test_cached_model_keeps_selector_patches_and_labels_layerstack_caches():
    lm = _lm("llama_gqa", True)
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 8, {"batch": 1})
    (attention,) = sk.select(cached).at_instances_of(sk.nn.KVCachingAttention).get_sequence()
    assert attention.kv_cache.label == "sampler/cache_0"
    assert attention.kv_cache.metadata["layerstack_axes"] == {
        "blocks": sk.nn.LayerStackVarBehavior.SHARED
    }
    assert attention.kv_cache.value[0].named_shape == {
        "blocks": 2,
        "batch": 1,
        "head_groups": 2,
        "projection": 8,
        "kv_seq": 8,
    }
    masks = sk.select(cached).at_instances_of(sk.nn.ApplyCausalAttentionMask).get_sequence()
    assert [m.kv_positions_input_name for m in masks] == ["kv_token_positions"]
    assert sk.select(cached).at_instances_of(sk.nn.Attention).count() == 0


def test_pad_id_and_default_positions_continue_from_the_cache():
    cached = sampling.KVCachingTransformerLM.from_uncached(
        _built_lm(False), cache_len=6, batch_axes={"batch": 2}, pad_id=0
    )
    _step(cached, named_tokens(np.array([[0, 0, 5, 6], [1, 2, 5, 6]], np.int32)))
    _step(cached, named_tokens(np.array([[7], [7]], np.int32)))
    np.testing.assert_array_equal(
        np.asarray(cached.kv_token_positions.value.unwrap("batch", "seq")),
        [[-1, -1, 0, 1, 2, -1], [0, 1, 2, 3, 4, -1]],
    )
    np.testing.assert_array_equal(np.asarray(cached.next_positions().unwrap("batch")), [3, 5])


def _vocab_sized_intermediates(cached, tokens, **kwargs) -> list[tuple[int, ...]]:
    """Shapes in the traced call that have both the sequence length and the vocabulary size."""
    slots, frozen = sk.unbind_variables(cached, freeze=True)

    def run(values):
        return sk.bind_variables(slots, [v.unfreeze_as_copy() for v in values])(tokens, **kwargs)

    text = str(jax.make_jaxpr(run)(frozen))
    shapes = {tuple(int(d) for d in m.split(",")) for m in re.findall(r"f32\[([\d,]+)\]", text)}
    seq = tokens.named_shape["seq"]
    return [shape for shape in shapes if seq in shape and 64 in shape]


def test_last_logits_only_unembeds_one_position():
    lm = _built_lm(False)
    tokens = _tokens(2, 6)
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 6, {"batch": 2})
    assert _vocab_sized_intermediates(cached, named_tokens(tokens))
    assert not _vocab_sized_intermediates(cached, named_tokens(tokens), last_logits_only=True)
    last = sk.variable_jit(lambda m, t: m(t, last_logits_only=True))(cached, named_tokens(tokens))
    assert last.named_shape == {"batch": 2, "seq": 1, "vocabulary": 64}
    np.testing.assert_allclose(
        np.asarray(last.unwrap("batch", "seq", "vocabulary"))[:, 0],
        our_logits(lm, tokens)[:, -1],
        atol=1e-5,
        rtol=0,
    )


# Greedy generation ------------------------------------------------------------------
# Most tests share prompts of shape (2, 5) and 6 new tokens, so they share compiled programs.


@pytest.mark.parametrize(
    "case, use_layer_stack",
    [("llama_gqa", False), ("llama_gqa", True), ("mistral_window3", False)],
    ids=["llama-list", "llama-stack", "mistral-list"],
)
def test_greedy_generate_matches_transformers(case, use_layer_stack):
    prompt = _tokens(2, 5)
    expected = _hf_greedy(_hf_model(case), prompt, 6)
    np.testing.assert_array_equal(_greedy(_lm(case, use_layer_stack), prompt, 6), expected)


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_left_padded_batch_decodes_each_prompt_as_if_alone(use_layer_stack):
    short, long = _tokens(1, 3, seed=1), _tokens(1, 6, seed=2)
    batch = np.concatenate([np.pad(short, ((0, 0), (3, 0))), long])
    got = _greedy(_lm("llama_gqa", use_layer_stack), batch, 6)
    hf = _hf_model("llama_gqa")
    np.testing.assert_array_equal(got[:1], _hf_greedy(hf, short, 6))
    np.testing.assert_array_equal(got[1:], _hf_greedy(hf, long, 6))


def test_prompt_positions_override_the_padding_convention():
    # Token 0 starts both prompts and is real here; explicit positions say so.
    lm = _lm("llama_gqa", False)
    prompt = _tokens(2, 5)
    prompt[:, 0] = 0
    positions = sk.nx.wrap(jnp.arange(5), "seq")
    got = _greedy(lm, prompt, 6, prompt_positions=positions)
    np.testing.assert_array_equal(got, _hf_greedy(_hf_model("llama_gqa"), prompt, 6))
    np.testing.assert_array_equal(
        _greedy(lm, prompt, 6), _hf_greedy(_hf_model("llama_gqa"), prompt[:, 1:], 6)
    )


def test_unbatched_prompt():
    prompt = _tokens(1, 5)
    new = sampling.generate(
        _lm("llama_gqa", False),
        sk.nx.wrap(jnp.asarray(prompt[0]), "seq"),
        max_new_tokens=6,
        temperature=0.0,
    )
    assert new.named_shape == {"seq": 6}
    np.testing.assert_array_equal(
        np.asarray(new.unwrap("seq")), _hf_greedy(_hf_model("llama_gqa"), prompt, 6)[0]
    )


def test_stop_tokens_stop_each_sequence_and_end_the_loop():
    lm = _lm("llama_gqa", False)
    prompt = _tokens(2, 5)
    free = _greedy(lm, prompt, 6)
    stops = (int(free[0, 1]), int(free[1, 3]))
    expected, stopped_at = free.copy(), []
    for row in range(2):
        first_hit = int(np.flatnonzero(np.isin(free[row], stops))[0])
        expected[row, first_hit + 1 :] = 0
        stopped_at.append(first_hit)
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 16, {"batch": 2})
    got = _greedy(cached, prompt, 6, stop_tokens=stops)
    np.testing.assert_array_equal(got, expected)
    assert (got == 0).any()
    # One token is fed per step, and the loop ends once every row has stopped.
    assert max(stopped_at) < 5
    assert int(cached.cache_end_index.value) == 5 + max(stopped_at)


def test_generate_on_a_cached_model_continues_its_cache():
    lm = _lm("llama_gqa", True)
    prompt = _tokens(2, 5)
    whole = _greedy(lm, prompt, 6)
    np.testing.assert_array_equal(whole, _hf_greedy(_hf_model("llama_gqa"), prompt, 6))
    # Two sequences: generate runs the cached stack's blocks as a list, each
    # writing its slice of the one stacked cache.
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 10, {"batch": 2})
    first = _greedy(cached, prompt, 3)
    # The cache holds the prompt and every new token but the last.
    assert int(cached.cache_end_index.value) == 5 + 2
    # pad_id=-1: no token is padding (a new token may well be 0).
    second = _greedy(cached, first[:, -1:], 3, pad_id=-1)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), whole)
    assert int(cached.cache_end_index.value) == 10
    with pytest.raises(ValueError, match="no room"):
        _greedy(cached, first[:, -1:], 3, pad_id=-1)


# Sampling ---------------------------------------------------------------------------


def _sample(lm, prompt, rng_seed, **kwargs):
    new = sampling.generate(
        lm, named_tokens(prompt), max_new_tokens=6, rng=jax.random.key(rng_seed), **kwargs
    )
    return _ids(new)


def test_top_k_one_and_tiny_top_p_are_greedy():
    lm = _lm("llama_gqa", False)
    prompt = _tokens(2, 5)
    greedy = _greedy(lm, prompt, 6)
    np.testing.assert_array_equal(_sample(lm, prompt, 1, temperature=1.5, top_k=1), greedy)
    np.testing.assert_array_equal(_sample(lm, prompt, 1, temperature=1.5, top_p=1e-6), greedy)


def test_temperature_sampling_is_reproducible_and_depends_on_the_key():
    lm = _lm("llama_gqa", False)
    prompt = _tokens(2, 5)
    first = _sample(lm, prompt, 3, temperature=3.0)
    np.testing.assert_array_equal(_sample(lm, prompt, 3, temperature=3.0), first)
    assert not np.array_equal(_sample(lm, prompt, 4, temperature=3.0), first)
    assert not np.array_equal(first, _greedy(lm, prompt, 6))


@pytest.mark.parametrize("option", [dict(top_k=3), dict(top_p=0.3)], ids=["top_k", "top_p"])
def test_filters_restrict_the_first_token(option):
    lm = _lm("llama_gqa", False)
    prompt = np.repeat(_tokens(1, 5), 2, axis=0)
    temperature = 4.0
    logits = our_logits(lm, prompt[:1])[0, -1] / temperature
    order = np.argsort(-logits)
    if "top_k" in option:
        allowed = set(order[: option["top_k"]].tolist())
    else:
        probs = np.exp(logits - logits.max())
        mass = np.cumsum(probs[order] / probs.sum())
        allowed = set(order[: int(np.searchsorted(mass, option["top_p"])) + 1].tolist())
    assert 1 < len(allowed) < 16
    first = {
        int(token)
        for seed in range(12)
        for token in _sample(lm, prompt, seed, temperature=temperature, **option)[:, 0]
    }
    assert first <= allowed
    assert len(first) > 1


def test_second_call_with_the_same_shapes_does_not_recompile():
    lm = _lm("llama_gqa", False)
    _sample(lm, _tokens(2, 5, seed=7), 0, temperature=1.0, top_k=5)
    compiled = sampling._generate_jit._cache_size()
    _sample(lm, _tokens(2, 5, seed=8), 1, temperature=0.7, top_k=9, stop_tokens=(3, 4))
    _sample(lm, _tokens(2, 5, seed=9), 2, temperature=0.9, top_k=2, stop_tokens=[5], pad_id=2)
    assert sampling._generate_jit._cache_size() == compiled


# Patched models ---------------------------------------------------------------------


@sk.pytree_dataclass
class AddVector(sk.nn.Layer):
    vector: sk.nx.NamedArray

    def __call__(self, x, /, **side_inputs):
        return x + self.vector


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_user_inserted_layer_runs_at_every_decode_step(use_layer_stack):
    lm = _lm("llama_gqa", use_layer_stack)
    vector = sk.nx.wrap(2.0 * jax.random.normal(jax.random.key(1), (32,)), "embedding")
    blocks = sk.select(lm).at_instances_of(model_parts.TransformerBlock)
    if use_layer_stack:
        patched = blocks.apply(
            lambda b: dataclasses.replace(b, sublayers=[*b.sublayers, AddVector(vector)])
        )
    else:
        patched = blocks.insert_after(AddVector(vector))
    prompt = _tokens(2, 5)
    got = _greedy(patched, prompt, 6)
    assert not np.array_equal(got, _greedy(lm, prompt, 6))
    np.testing.assert_array_equal(got, _reference_greedy(patched, prompt, 6))


@sk.pytree_dataclass
class CountCalls(sk.nn.Layer):
    calls: sk.StateVariable

    def __call__(self, x, /, **side_inputs):
        self.calls.value = self.calls.value + 1
        return x


@sk.pytree_dataclass
class Record(sk.nn.Layer):
    seen: sk.StateVariable

    def __call__(self, x, /, **side_inputs):
        self.seen.value = x
        return x


def _after_first_block(lm, layer):
    blocks = sk.select(lm).at_instances_of(model_parts.TransformerBlock)
    return blocks.pick_nth_selected(0).insert_after(layer)


def test_user_state_is_carried_through_the_loop_and_written_back():
    calls = sk.StateVariable(jnp.int32(0), label="calls")
    patched = _after_first_block(_lm("llama_gqa", False), CountCalls(calls))
    _greedy(patched, _tokens(2, 5), 6)
    assert int(calls.value) == 6  # the prefill and five decode steps


@sk.pytree_dataclass
class RecordAll(sk.nn.Layer):
    seen: sk.StateVariable

    def __call__(self, x, /, **side_inputs):
        self.seen.value = sk.nx.concatenate([self.seen.value, x], "seq")
        return x


def test_state_that_changes_shape_between_steps_is_an_error():
    # A recorder that changes shape once (prompt, then one token) is fine (see
    # tests/toolshed/test_save_intermediates.py); one that grows every step is not.
    seen = sk.StateVariable(sk.nx.zeros({"batch": 2, "seq": 1, "embedding": 32}), label="seen")
    patched = _after_first_block(_lm("llama_gqa", False), RecordAll(seen))
    with pytest.raises(ValueError, match="StateVariable 'seen' changed its structure"):
        _greedy(patched, _tokens(2, 5), 3)


# penzai-style Python loop -----------------------------------------------------------


def test_pyloop_greedy_matches_generate():
    lm = _lm("llama_gqa", False)
    prompt = _tokens(2, 5)
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 10, {"batch": 2})
    out = sampling.temperature_sample_pyloop(
        cached, named_tokens(prompt), jax.random.key(0), temperature=0.0, max_sampling_steps=6
    )
    np.testing.assert_array_equal(_ids(out), _greedy(lm, prompt, 6))
    assert int(cached.cache_end_index.value) == 5 + 5


def test_pyloop_reads_logits_at_the_last_real_token_with_pad_id():
    prompt = _tokens(1, 4)
    padded = np.pad(prompt, ((0, 0), (0, 2)))  # right padding: penzai allows it with pad_id
    cached = sampling.KVCachingTransformerLM.from_uncached(
        _lm("llama_gqa", False), 12, {"batch": 1}, pad_id=0
    )
    out = sampling.temperature_sample_pyloop(
        cached, named_tokens(padded), jax.random.key(0), temperature=0.0, max_sampling_steps=4
    )
    np.testing.assert_array_equal(_ids(out), _hf_greedy(_hf_model("llama_gqa"), prompt, 4))


# Other families ---------------------------------------------------------------------


_GEMMA_FAMILY = dict(TINY_SIZES, num_key_value_heads=2, head_dim=8, sliding_window=3)
# family -> (config class, model class, config, parameters to sharpen)
_FAMILIES = {
    "gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(TINY_SIZES, rotary_pct=0.5),
        ("query_key_value.weight", "embed_out.weight"),
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16),
        ("c_attn.weight", "wte.weight"),
    ),
    # logit soft caps, every other layer sliding
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        _GEMMA_FAMILY,
        ("q_proj.weight", "k_proj.weight"),
    ),
    # q/k norms, local and global layers with their own RoPE
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(_GEMMA_FAMILY, layer_types=["sliding_attention", "full_attention"]),
        ("q_proj.weight", "k_proj.weight"),
    ),
}


def _family_model(family: str):
    config_class, model_class, config, sharpen = _FAMILIES[family]
    return random_hf_model(
        config_class, model_class, config, perturb=None, sharpen=dict.fromkeys(sharpen, 8.0)
    )


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2", "gemma2", "gemma3"])
def test_other_families_cache_and_generate(family):
    if family.startswith("gpt"):
        pytest.importorskip(f"saikei.models.transformer.variants._{family}_hf")
    hf = _family_model(family)
    lm = _families.from_huggingface_model(hf)
    tokens = _tokens(2, 8)
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 8, {"batch": 2})
    got = np.concatenate(
        [
            np.asarray(_step(cached, named_tokens(c)).unwrap("batch", "seq", "vocabulary"))
            for c in (tokens[:, :5], tokens[:, 5:6], tokens[:, 6:7], tokens[:, 7:8])
        ],
        axis=1,
    )
    np.testing.assert_allclose(got, our_logits(lm, tokens), atol=1e-5, rtol=0)
    prompt = _tokens(2, 5)
    np.testing.assert_array_equal(_greedy(lm, prompt, 6), _hf_greedy(hf, prompt, 6))


# Errors -----------------------------------------------------------------------------


def test_prompt_longer_than_the_cache_is_an_error():
    lm = _built_lm(False)
    prompt = named_tokens(_tokens(2, 6))
    with pytest.raises(ValueError, match=r"cache_len=5 is too short.*at least 9"):
        sampling.generate(lm, prompt, max_new_tokens=4, temperature=0.0, cache_len=5)
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 4, {"batch": 2})
    with pytest.raises(ValueError, match="no room"):
        sampling.generate(cached, prompt, max_new_tokens=1, temperature=0.0)
    with pytest.raises(ValueError, match="cannot append 6 tokens"):
        cached(prompt)


def test_bad_axis_names_are_errors():
    lm = _built_lm(False)
    ids = jnp.ones((2, 3), jnp.int32)
    with pytest.raises(ValueError, match="'seq' axis"):
        sampling.generate(lm, sk.nx.wrap(ids, "batch", "time"), max_new_tokens=2, temperature=0)
    with pytest.raises(ValueError, match="'embedding' cannot be a batch axis"):
        sampling.generate(lm, sk.nx.wrap(ids, "embedding", "seq"), max_new_tokens=2, temperature=0)
    with pytest.raises(ValueError, match="'seq' cannot be a batch axis"):
        sampling.KVCachingTransformerLM.from_uncached(lm, 8, {"seq": 2})
    with pytest.raises(ValueError, match=r"'blocks'.*LayerStack"):
        sampling.KVCachingTransformerLM.from_uncached(_lm("llama_gqa", True), 8, {"blocks": 2})
    cached = sampling.KVCachingTransformerLM.from_uncached(lm, 8, {"batch": 2})
    with pytest.raises(ValueError, match="exactly the axes"):
        cached(sk.nx.wrap(ids, "rows", "seq"))
    with pytest.raises(ValueError, match="batch axes"):
        sampling.generate(
            cached, sk.nx.wrap(ids[:1], "batch", "seq"), max_new_tokens=2, temperature=0
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=0, temperature=0.0), "max_new_tokens"),
        (dict(max_new_tokens=2, temperature=-1.0), "temperature"),
        (dict(max_new_tokens=2, temperature=1.0), "needs a PRNG key"),
        (dict(max_new_tokens=2, temperature=1.0, rng=jax.random.key(0), top_k=0), "top_k"),
        (dict(max_new_tokens=2, temperature=1.0, rng=jax.random.key(0), top_p=0.0), "top_p"),
        (dict(max_new_tokens=2, temperature=0.0, stop_tokens="x"), "stop_tokens"),
    ],
)
def test_bad_options_are_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sampling.generate(_built_lm(False), named_tokens(_tokens(2, 3)), **kwargs)


def test_all_padding_prompt_is_an_error():
    prompt = np.array([[0, 0, 0], [4, 5, 6]], np.int32)
    with pytest.raises(ValueError, match=r"batch entries \[\(0,\)\].*every prompt token is pad"):
        _greedy(_built_lm(False), prompt, 2)
    positions = sk.nx.wrap(jnp.array([[0, 1, -1], [0, 1, 2]]), "batch", "seq")
    with pytest.raises(ValueError, match="last prompt position is -1"):
        _greedy(_built_lm(False), prompt + 1, 2, prompt_positions=positions)


def test_attention_without_a_position_mask_cannot_be_cached():
    unmasked = (
        sk.select(_built_lm(False))
        .at_instances_of(sk.nn.ApplyCausalAttentionMask)
        .set(sk.nn.Identity())
    )
    with pytest.raises(ValueError, match="no mask layer that reads key positions"):
        sampling.KVCachingTransformerLM.from_uncached(unmasked, 8, {"batch": 1})
    with pytest.raises(TypeError, match="expected a TransformerLM"):
        sampling.KVCachingTransformerLM.from_uncached(_built_lm(False).body, 8, {})


def test_unstacked_model_computes_what_the_layerstack_does():
    # Batched generate runs a LayerStack's blocks as a list (XLA's CPU matmul
    # would otherwise copy each block's weights at every step); the list must
    # compute exactly what the stack does.
    stacked = _lm("llama_gqa", True)
    unstacked = sampling._unstacked(stacked)
    assert sk.select(unstacked).at_instances_of(sk.nn.LayerStack).count() == 0
    assert sampling._stacks_run_as_lists(stacked)
    assert not sampling._stacks_run_as_lists(unstacked)
    tokens = sk.nx.wrap(jnp.asarray(_tokens(2, 5)), "batch", "seq")
    np.testing.assert_allclose(
        np.asarray(unstacked(tokens).unwrap("batch", "seq", "vocabulary")),
        np.asarray(stacked(tokens).unwrap("batch", "seq", "vocabulary")),
        rtol=1e-5,
        atol=1e-5,
    )


def test_unstacked_cached_model_fills_the_stacked_cache_as_the_layerstack_does():
    # A cached LayerStack holds one cache for all its blocks; run as a list,
    # each block writes and reads its own slice of it, as inside the stack.
    stacked = _lm("llama_gqa", True)
    in_stack = sampling.KVCachingTransformerLM.from_uncached(stacked, 8, {"batch": 2})
    as_list = sampling._unstacked(
        sampling.KVCachingTransformerLM.from_uncached(stacked, 8, {"batch": 2})
    )
    assert sampling._stacks_run_as_lists(in_stack)
    caches = [
        sk.select(model).at_instances_of(sk.nn.KVCachingAttention).get_sequence()
        for model in (in_stack, as_list)
    ]
    assert [len(c) for c in caches] == [1, 2]  # the list's blocks share one variable
    assert caches[1][0].kv_cache is caches[1][1].kv_cache
    tokens = _tokens(2, 6)
    for chunk in (tokens[:, :4], tokens[:, 4:5], tokens[:, 5:]):
        outs = [model(named_tokens(chunk)) for model in (in_stack, as_list)]
        np.testing.assert_allclose(
            *(np.asarray(o.unwrap("batch", "seq", "vocabulary")) for o in outs),
            rtol=1e-5,
            atol=1e-5,
        )
    for ours, theirs in zip(caches[0][0].kv_cache.value, caches[1][0].kv_cache.value):
        assert ours.named_shape == theirs.named_shape
        np.testing.assert_allclose(
            np.asarray(ours.unwrap(*ours.axis_names)),
            np.asarray(theirs.unwrap(*ours.axis_names)),
            rtol=1e-5,
            atol=1e-6,
        )
    np.testing.assert_allclose(
        np.asarray(outs[0].unwrap("batch", "seq", "vocabulary"))[:, -1],
        our_logits(stacked, tokens)[:, -1],
        atol=1e-5,
        rtol=0,
    )
