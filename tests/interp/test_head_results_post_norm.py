"""Per-head results of models with post-attention norms (Gemma 2/3): the norm frozen.

`ActivationCache.head_results` divides each head's output by the RMS of the
summed attention output of the real run and multiplies by the norm's scale,
so the heads sum to `attn_out`. The oracle for the per-head values is the
tiny random `transformers` model itself: the input and output of its
`o_proj` (torch hooks) and its post-attention norm's weight.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from saikei import nn, sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from tests.models._hf_helpers import TINY_LLAMA, random_hf_model  # noqa: E402

interp = sk.interp
ATOL = 1e-5

_BASE = dict(TINY_LLAMA, num_key_value_heads=2, initializer_range=0.1, head_dim=8)
# No final logit soft cap, so that logit attributions sum to the logit itself.
CASES = {
    # Three layers: a local/global pair in a LayerStack and one left over.
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(_BASE, num_hidden_layers=3, sliding_window=3, final_logit_softcapping=None),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(_BASE, num_hidden_layers=4, sliding_window=3, sliding_window_pattern=2),
    ),
}


@functools.cache
def _hf(case):
    config_class, model_class, config = CASES[case]
    model = random_hf_model(config_class, model_class, config)
    model.set_attn_implementation("eager")
    return model


@functools.cache
def _lm(case, use_layer_stack):
    return _families.from_huggingface_model(_hf(case), use_layer_stack=use_layer_stack)


def _tokens():
    ids = np.random.default_rng(3).integers(0, 64, size=(2, 6))
    return sk.nx.wrap(jnp.asarray(ids), "batch", "seq")


def _np(value, *axes):
    return np.asarray(value.unwrap(*axes))


def _hf_head_results(case, tokens):
    """Frozen-norm head results from the `transformers` model: {layer: (batch, seq, heads, emb)}."""
    model = _hf(case)
    seen = {}
    handles = []
    for i, layer in enumerate(model.model.layers):

        def record(module, args, output, i=i):
            seen[i] = (args[0].detach().numpy(), output.detach().numpy())

        handles.append(layer.self_attn.o_proj.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(torch.tensor(tokens))
    finally:
        for handle in handles:
            handle.remove()
    config = model.config
    out = {}
    for i, layer in enumerate(model.model.layers):
        z, summed = seen[i]
        heads = config.num_attention_heads
        z = z.reshape(*z.shape[:2], heads, -1)
        w_o = layer.self_attn.o_proj.weight.detach().numpy().T.reshape(heads, z.shape[-1], -1)
        per_head = np.einsum("bshd,hde->bshe", z, w_o)
        rms = np.sqrt(np.mean(np.square(summed), axis=-1) + config.rms_norm_eps)
        scale = 1.0 + layer.post_attention_layernorm.weight.detach().numpy()  # Gemma's 1 + w
        out[i] = per_head / rms[:, :, None, None] * scale
    return out


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_head_results_sum_to_attn_out(case, use_layer_stack):
    lm = _lm(case, use_layer_stack)
    _, cache = interp.run_with_cache(lm, _tokens(), names=["attn.result", "attn_out"])
    results = cache.head_results()
    n = cache.num_layers
    assert results.named_shape["layer"] == n and results.named_shape["heads"] == 4
    for i in range(n):
        summed = sk.nx.nmap(lambda a: a.sum(0))(cache.head_results(i).untag("heads"))
        np.testing.assert_allclose(
            _np(summed, "batch", "seq", "embedding"),
            _np(cache[f"blocks.{i}.attn_out"], "batch", "seq", "embedding"),
            atol=ATOL,
        )
        by_layer = results[{"layer": i}]
        assert float(jnp.abs((by_layer - cache.head_results(i)).data_array).max()) == 0.0


@pytest.mark.parametrize("case", list(CASES))
def test_head_results_match_transformers(case):
    tokens = _tokens()
    expected = _hf_head_results(case, np.asarray(tokens.unwrap("batch", "seq")))
    _, cache = interp.run_with_cache(_lm(case, True), tokens, names="attn.result")
    for i, value in expected.items():
        got = _np(cache.head_results(i), "batch", "seq", "heads", "embedding")
        np.testing.assert_allclose(got, value, atol=ATOL)


def test_attn_result_hook_point_stays_before_the_norm():
    # What flows into the post-attention norm: the heads sum to o_proj's output, not attn_out.
    _, cache = interp.run_with_cache(_lm("gemma2", False), _tokens(), names="blocks.0.attn.*")
    raw = cache["blocks.0.attn.result"]
    frozen = cache.head_results(0)
    assert float(jnp.abs((raw - frozen).data_array).max()) > 1e-3


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_per_head_logit_attributions_sum_to_the_logit(case, use_layer_stack):
    lm = _lm(case, use_layer_stack)
    tokens = _tokens()
    logits, cache = interp.run_with_cache(lm, tokens, names=["embed", "attn.result", "mlp_out"])
    n = cache.num_layers
    targets = sk.nx.wrap(jnp.roll(tokens.unwrap("batch", "seq"), -1, axis=1), "batch", "seq")
    head_attrs = interp.logit_attrs(lm, cache.apply_final_norm(cache.head_results()), targets)
    other = sk.nx.stack([cache["embed"]] + [cache[f"blocks.{i}.mlp_out"] for i in range(n)], "part")
    other_attrs = interp.logit_attrs(lm, cache.apply_final_norm(other), targets)
    total = sk.nx.nmap(lambda a: a.sum((0, 1)))(head_attrs.untag("layer", "heads")) + sk.nx.nmap(
        lambda a: a.sum(0)
    )(other_attrs.untag("part"))
    chosen = sk.nx.nmap(lambda row, t: row[t])(logits.untag("vocabulary"), targets)
    np.testing.assert_allclose(_np(total, "batch", "seq"), _np(chosen, "batch", "seq"), atol=1e-4)


def test_a_post_norm_that_is_not_an_rms_norm_is_refused():
    lm = _lm("gemma2", False)

    def post_norm(node):
        layers = getattr(node, "sublayers", None)
        return (
            isinstance(node, nn.Sequential)
            and bool(layers)
            and len(layers) > 2
            and isinstance(layers[1], nn.Attention)
            and isinstance(layers[2], nn.RMSLayerNorm)
        )

    labels = iter(range(100))

    def to_layer_norm(branch):
        norm = nn.LayerNorm.from_config(f"post{next(labels)}", jax.random.key(0), {"embedding": 32})
        return nn.Sequential([*branch.sublayers[:2], norm, *branch.sublayers[3:]])

    changed = (
        sk.select(interp.with_hook_points(lm)).at_subtrees_where(post_norm).apply(to_layer_norm)
    )
    _, cache = interp.run_with_cache(changed, _tokens(), names="attn.result")
    with pytest.raises(ValueError, match="not a shift-free RMS norm"):
        cache.head_results()
