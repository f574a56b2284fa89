"""run_with_cache, ActivationCache and logit_attrs on tiny models converted from transformers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from saikei import sk
from saikei.interp import _run_with_cache
from tests.interp._tiny import tiny_hf, tiny_lm

interp = sk.interp
ATOL = 1e-5


def _tokens(seq=6, batch=2):
    ids = np.random.default_rng(1).integers(0, 64, size=(batch, seq))
    return sk.nx.wrap(jnp.asarray(ids), "batch", "seq")


def _np(value, *axes):
    return np.asarray(value.unwrap(*axes))


def _max_diff(a, b):
    return float(jnp.abs((a - b).data_array).max())


# Names ------------------------------------------------------------------------------------


def test_names_accept_globs_sites_lists_and_predicates():
    lm = tiny_lm("llama_list")
    tokens = _tokens()
    _, by_glob = interp.run_with_cache(lm, tokens, "blocks.*.attn.pattern")
    assert list(by_glob) == [f"blocks.{i}.attn.pattern" for i in range(3)]
    _, by_site = interp.run_with_cache(lm, tokens, ["resid_post", "embed"])
    assert list(by_site) == ["embed"] + [f"blocks.{i}.resid_post" for i in range(3)]
    _, by_predicate = interp.run_with_cache(lm, tokens, lambda n: n.startswith("blocks.1.mlp."))
    assert list(by_predicate) == ["blocks.1.mlp.pre", "blocks.1.mlp.post"]


def test_default_names_are_all_but_head_results():
    lm = interp.with_hook_points(tiny_lm("llama_list"))
    _, cache = interp.run_with_cache(lm, _tokens())
    assert list(cache) == [n for n in interp.hook_names(lm) if not n.endswith("attn.result")]


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no hook point matches 'blocks\.9\.resid_pre'"):
        interp.run_with_cache(tiny_lm("llama_list"), _tokens(), "blocks.9.resid_pre")


def test_missing_name_in_cache_says_how_to_get_it():
    _, cache = interp.run_with_cache(tiny_lm("llama_list"), _tokens(), "embed")
    with pytest.raises(KeyError, match="Ask run_with_cache for it"):
        cache["blocks.0.attn.z"]


def test_tokens_without_seq_are_refused():
    with pytest.raises(ValueError, match="'seq' axis"):
        interp.run_with_cache(tiny_lm("llama_list"), jnp.zeros((2, 3), jnp.int32))


def test_models_with_state_are_refused():
    lm = interp.with_hook_points(tiny_lm("llama_list"))
    stateful = (
        sk.select(lm)
        .at_instances_of(interp.HookPoint)
        .where(lambda h: h.name == "embed")
        .apply(lambda h: sk.nn.Sequential([h, _Counter(sk.StateVariable(0, label="n"))]))
    )
    with pytest.raises(ValueError, match="StateVariables"):
        interp.run_with_cache(stateful, _tokens())


@sk.pytree_dataclass
class _Counter(sk.nn.Layer):
    calls: sk.StateVariable

    def __call__(self, value, /, **side_inputs):
        self.calls.value = self.calls.value + 1
        return value


# Values -----------------------------------------------------------------------------------


def test_layer_stack_and_block_list_give_the_same_cache():
    tokens = _tokens()
    logits_list, listed = interp.run_with_cache(tiny_lm("llama_list"), tokens)
    logits_stack, stacked = interp.run_with_cache(tiny_lm("llama_stack"), tokens)
    assert list(listed) == list(stacked)
    for name in listed:
        assert _max_diff(listed[name], stacked[name]) < ATOL, name
    assert _max_diff(logits_list, logits_stack) < ATOL


def test_logits_equal_a_plain_call():
    lm = tiny_lm("gemma2_stack")
    tokens = _tokens()
    logits, cache = interp.run_with_cache(lm, tokens, names="attn.result")
    assert _max_diff(logits, lm(tokens)) < ATOL
    assert list(cache) == [f"blocks.{i}.attn.result" for i in range(5)]


@pytest.mark.parametrize(
    "which", ["llama_stack", "gemma2_stack", "neox_parallel_stack", "gpt2_list"]
)
def test_residual_identities_hold(which):
    _, cache = interp.run_with_cache(tiny_lm(which), _tokens())
    for i in range(cache.num_layers):
        pre, post = cache[f"blocks.{i}.resid_pre"], cache[f"blocks.{i}.resid_post"]
        attn, mlp = cache[f"blocks.{i}.attn_out"], cache[f"blocks.{i}.mlp_out"]
        assert _max_diff(post, pre + attn + mlp) < ATOL, i
        if f"blocks.{i}.resid_mid" in cache:
            assert _max_diff(cache[f"blocks.{i}.resid_mid"], pre + attn) < ATOL, i
        if i:
            assert _max_diff(pre, cache[f"blocks.{i - 1}.resid_post"]) == 0
    first = cache["embed"] + (cache.get("pos_embed", 0))
    assert _max_diff(cache["blocks.0.resid_pre"], first) < ATOL


@pytest.mark.parametrize("which", ["llama_list", "neox_parallel_stack", "gpt2_list"])
def test_decompose_resid_sums_to_the_final_residual(which):
    _, cache = interp.run_with_cache(tiny_lm(which), _tokens())
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and labels[-1] == f"blocks.{cache.num_layers - 1}.mlp_out"
    total = sk.nx.nmap(lambda a: a.sum(0))(parts.untag("component"))
    assert _max_diff(total, cache[f"blocks.{cache.num_layers - 1}.resid_post"]) < ATOL


@pytest.mark.parametrize("which", ["llama_list", "gpt2_list"])
def test_final_norm_with_frozen_scale_is_linear_and_exact(which):
    lm = tiny_lm(which)
    _, cache = interp.run_with_cache(lm, _tokens())
    final = cache[f"blocks.{cache.num_layers - 1}.resid_post"]
    assert _max_diff(cache.apply_final_norm(final, add_bias=True), cache["final_norm"]) < ATOL
    parts = cache.decompose_resid(apply_final_norm=True)
    total = sk.nx.nmap(lambda a: a.sum(0))(parts.untag("component"))
    # The pieces sum to the normalized residual without the LayerNorm shift.
    shift = cache.apply_final_norm(final, add_bias=True) - cache.apply_final_norm(final)
    assert _max_diff(total + shift, cache["final_norm"]) < ATOL
    if which == "gpt2_list":
        bias = tiny_hf(which).transformer.ln_f.bias.detach().numpy()
        np.testing.assert_allclose(_np(shift, "batch", "seq", "embedding")[0, 0], bias, atol=ATOL)


def test_accumulated_resid_is_the_logit_lens():
    lm = tiny_lm("gpt2_list")
    logits, cache = interp.run_with_cache(lm, _tokens())
    resid, labels = cache.accumulated_resid(apply_final_norm=True, return_labels=True)
    assert labels == ["blocks.0.resid_pre", "blocks.1.resid_pre", "blocks.1.resid_post"]
    assert resid.named_shape["layer"] == 3
    assert _max_diff(resid[{"layer": 2}], cache["final_norm"]) < ATOL
    # The last entry, unembedded, gives the logits.
    w_u = _np(sk.interp._logit_attrs.unembedding_matrix(lm), "embedding", "vocabulary")
    lens = _np(resid[{"layer": 2}], "batch", "seq", "embedding") @ w_u
    np.testing.assert_allclose(lens, _np(logits, "batch", "seq", "vocabulary"), atol=1e-4)
    assert cache.accumulated_resid(layer=1).named_shape["layer"] == 2


def test_per_head_logit_attributions_sum_to_the_logit():
    lm = tiny_lm("llama_list")  # RMS norms, no biases: the decomposition is exact
    tokens = _tokens()
    logits, cache = interp.run_with_cache(lm, tokens, names=None)
    _, results = interp.run_with_cache(lm, tokens, names="attn.result")
    heads = results.head_results()  # layer, heads, batch, seq, embedding
    assert heads.named_shape["heads"] == 4
    for i in range(3):
        summed = sk.nx.nmap(lambda a: a.sum(0))(results.head_results(i).untag("heads"))
        assert _max_diff(summed, cache[f"blocks.{i}.attn_out"]) < ATOL
    # Attributions to the logit of the next token at each position (last: token 0).
    targets = sk.nx.wrap(jnp.roll(tokens.unwrap("batch", "seq"), -1, axis=1), "batch", "seq")
    head_attrs = interp.logit_attrs(lm, results.apply_final_norm(heads), targets)
    other = sk.nx.stack([cache["embed"]] + [cache[f"blocks.{i}.mlp_out"] for i in range(3)], "part")
    other_attrs = interp.logit_attrs(lm, results.apply_final_norm(other), targets)
    total = sk.nx.nmap(lambda a: a.sum((0, 1)))(head_attrs.untag("layer", "heads")) + sk.nx.nmap(
        lambda a: a.sum(0)
    )(other_attrs.untag("part"))
    chosen = sk.nx.nmap(lambda row, t: row[t])(logits.untag("vocabulary"), targets)
    np.testing.assert_allclose(_np(total, "batch", "seq"), _np(chosen, "batch", "seq"), atol=1e-4)


def test_logit_attrs_take_directions():
    lm = tiny_lm("llama_list")
    _, cache = interp.run_with_cache(lm, _tokens())
    parts = cache.decompose_resid(apply_final_norm=True)
    w_u = sk.interp._logit_attrs.unembedding_matrix(lm)
    a, b = 5, 7
    direction = w_u[{"vocabulary": a}] - w_u[{"vocabulary": b}]
    by_direction = interp.logit_attrs(lm, parts, direction)
    by_tokens = interp.logit_attrs(lm, parts, sk.nx.wrap(jnp.array(a))) - interp.logit_attrs(
        lm, parts, sk.nx.wrap(jnp.array(b))
    )
    assert _max_diff(by_direction, by_tokens) < ATOL


# Post-attention norms (Gemma 2/3): tests/interp/test_head_results_post_norm.py


def test_stack_has_a_layer_axis():
    _, cache = interp.run_with_cache(tiny_lm("gemma2_stack"), _tokens(), names="attn.pattern")
    stacked = cache.stack("attn.pattern")
    assert stacked.named_shape["layer"] == 5 and stacked.named_shape["heads"] == 4
    assert _max_diff(stacked[{"layer": 3}], cache["blocks.3.attn.pattern"]) == 0


# Transformations --------------------------------------------------------------------------


def test_cache_is_a_pytree_that_keeps_its_names():
    _, cache = interp.run_with_cache(tiny_lm("llama_list"), _tokens(), "resid_post")
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, cache)
    assert list(doubled) == list(cache)
    assert _max_diff(doubled["blocks.2.resid_post"], 2 * cache["blocks.2.resid_post"]) == 0


def test_under_jit_and_compiled_once_per_name_set():
    lm = sk.freeze_params(tiny_lm("mqa_stack"))
    tokens = _tokens()

    @jax.jit
    def resid(model, t):
        return interp.run_with_cache(model, t, "resid_post")[1]

    jitted = resid(lm, tokens)
    _, plain = interp.run_with_cache(lm, tokens, "resid_post")
    for name in plain:
        assert _max_diff(jitted[name], plain[name]) < ATOL
    before = _run_with_cache._run_jit._cache_size()
    interp.run_with_cache(lm, _tokens(), "resid_post")
    assert _run_with_cache._run_jit._cache_size() == before
    interp.run_with_cache(lm, _tokens(), ["resid_post", "embed"])
    assert _run_with_cache._run_jit._cache_size() == before + 1


def test_under_vmap_matches_the_batched_call():
    lm = sk.freeze_params(tiny_lm("neox_parallel_stack"))
    ids = _tokens().unwrap("batch", "seq")

    def one(row):
        return interp.run_with_cache(lm, sk.nx.wrap(row, "seq"), "attn.pattern")[1][
            "blocks.2.attn.pattern"
        ].unwrap("heads", "seq", "kv_seq")

    mapped = jax.vmap(one)(ids)
    _, batched = interp.run_with_cache(lm, sk.nx.wrap(ids, "batch", "seq"), "attn.pattern")
    want = _np(batched["blocks.2.attn.pattern"], "batch", "heads", "seq", "kv_seq")
    np.testing.assert_allclose(np.asarray(mapped), want, atol=ATOL)


def test_gradients_flow_through_cached_values():
    lm = tiny_lm("llama_stack")
    tokens = _tokens()
    tree, params = sk.unbind_params(lm, freeze=True)
    table = next(i for i, p in enumerate(params) if p.label.endswith("embedder.embeddings"))

    def embed_sum(values):
        model = sk.bind_variables(tree, values)
        return interp.run_with_cache(model, tokens, "embed")[1]["embed"].data_array.sum()

    grads = jax.grad(embed_sum)(params)
    # d sum(embeddings of the tokens) / d table = how often each token occurs (per row).
    counts = np.bincount(np.asarray(tokens.data_array).ravel(), minlength=64)
    got = _np(grads[table].value, "vocabulary", "embedding")
    np.testing.assert_allclose(got, np.repeat(counts[:, None], got.shape[1], axis=1), atol=1e-6)

    def logit_sum(values, through_cache):
        model = sk.bind_variables(tree, values)
        logits = (
            interp.run_with_cache(model, tokens, "attn.result")[0]
            if through_cache
            else model(tokens)
        )
        return logits.data_array.sum()

    via_cache = jax.grad(logit_sum)(params, True)
    plain = jax.grad(logit_sum)(params, False)
    for a, b in zip(via_cache, plain):
        np.testing.assert_allclose(
            np.asarray(a.value.data_array), np.asarray(b.value.data_array), atol=1e-4
        )


def test_left_padding_does_not_change_real_positions():
    lm = tiny_lm("gemma2_stack")
    tokens = _tokens(seq=5, batch=1)
    padded = sk.nx.wrap(
        jnp.concatenate([jnp.zeros((1, 2), jnp.int32), tokens.unwrap("batch", "seq")], 1),
        "batch",
        "seq",
    )
    positions = sk.nx.wrap(jnp.array([[-1, -1, 0, 1, 2, 3, 4]]), "batch", "seq")
    _, alone = interp.run_with_cache(lm, tokens, ["resid_post", "attn.z"])
    _, with_pads = interp.run_with_cache(
        lm, padded, ["resid_post", "attn.z"], token_positions=positions
    )
    for name in alone:
        ours = with_pads[name][{"seq": slice(2, None)}]
        assert _max_diff(ours, alone[name]) < ATOL, name
