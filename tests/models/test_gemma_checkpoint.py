"""Gemma from the official Flax parameter tree, checked against the `gemma` package's forward pass.

The oracle is Google DeepMind's `gemma` package (its Flax `gemma.transformer`
module, installed with `pip install --no-deps gemma==2.0.8`: later releases
import TensorFlow through kauldron). Small random configs of each family are
initialized by the package itself, every parameter perturbed, and the package's
logits compared with ours. No download.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gemma_transformer = pytest.importorskip("gemma.transformer")
gemma_modules = pytest.importorskip("gemma.modules")

from saikei import sk  # noqa: E402
from saikei.models.transformer.variants import gemma  # noqa: E402

_LOCAL, _GLOBAL = gemma_modules.AttentionType.LOCAL_SLIDING, gemma_modules.AttentionType.GLOBAL
_Q = gemma_transformer.QueryPreAttentionNormalisation
_SIZES = dict(num_embed=40, embed_dim=32, hidden_dim=48, head_dim=8, max_cache_length=None)

# name -> (the package's TransformerConfig fields, our GemmaPreset)
CASES = {
    "gemma1_mqa": (
        dict(num_layers=2, num_heads=4, num_kv_heads=1, attention_types=(_GLOBAL,) * 2),
        gemma.GemmaPreset(num_layers=2),
    ),
    "gemma1_mha_qkv_einsum": (
        dict(num_layers=2, num_heads=4, num_kv_heads=4, attention_types=(_GLOBAL,) * 2),
        gemma.GemmaPreset(num_layers=2),
    ),
    "gemma2_gqa": (
        dict(
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            attention_types=(_LOCAL, _GLOBAL) * 2,
            sliding_window_size=3,
            final_logit_softcap=30.0,
            attn_logits_soft_cap=50.0,
            use_post_attn_norm=True,
            use_post_ffw_norm=True,
            transpose_gating_einsum=True,
            query_pre_attn_norm=_Q.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS,
        ),
        gemma.GemmaPreset(
            num_layers=4,
            attention_pattern=("local", "global"),
            sliding_window_size=3,
            final_logit_softcap=30.0,
            attn_logits_soft_cap=50.0,
            query_scaling="embed_dim_div_num_heads",
        ),
    ),
    "gemma3_like_qk_norm": (
        dict(
            num_layers=7,
            num_heads=4,
            num_kv_heads=2,
            attention_types=(_LOCAL,) * 5 + (_GLOBAL, _LOCAL),
            sliding_window_size=3,
            use_post_attn_norm=True,
            use_post_ffw_norm=True,
            use_qk_norm=True,
            local_base_frequency=10_000,
            global_base_frequency=1_000_000,
        ),
        gemma.GemmaPreset(
            num_layers=7,
            has_qk_norm=True,
            attention_pattern=("local",) * 5 + ("global",),
            sliding_window_size=3,
            global_rope_wavelength=1_000_000.0,
        ),
    ),
}


def _package_model(case):
    fields, _ = CASES[case]
    defaults = dict(final_logit_softcap=None, use_post_attn_norm=False, use_post_ffw_norm=False)
    config = gemma_transformer.TransformerConfig(**{**_SIZES, **defaults, **fields})
    model = gemma_transformer.Transformer(config)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 40, size=(2, 9)))
    positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((9, 9), bool)), (2, 9, 9))
    params = model.init(jax.random.key(0), tokens, positions, None, mask)
    # Perturb every array (norm scales start at zero), and sharpen attention.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    logits, _ = model.apply(params, tokens, positions, None, mask)
    return params, tokens, np.asarray(logits)


def _as_orbax_checkpoint(params):
    """The tree as orbax restores an official checkpoint: semi-flat, mlp arrays under "w"."""
    flat = {}

    def walk(tree, path):
        for key, value in tree.items():
            where = "/".join(("transformer", *path, key))
            if key == "mlp":  # the package keeps these arrays directly under mlp
                for name, array in value.items():
                    flat[f"{where}/{name}"] = {"w": array}
            elif all(not isinstance(v, dict) for v in value.values()):
                flat[where] = dict(value)
            else:
                walk(value, (*path, key))

    walk(params["params"], ())
    return flat


def _our_logits(model, tokens):
    out = model(sk.nx.wrap(tokens, "batch", "seq"))
    return np.asarray(out.astype(jnp.float32).unwrap("batch", "seq", "vocabulary"))


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_the_gemma_package(case, use_layer_stack):
    params, tokens, expected = _package_model(case)
    model = gemma.gemma_from_pretrained_checkpoint(
        _as_orbax_checkpoint(params), use_layer_stack=use_layer_stack, preset_name=CASES[case][1]
    )
    np.testing.assert_allclose(_our_logits(model, tokens), expected, atol=1e-4, rtol=0)


def test_nested_tree_as_the_package_uses_it_loads_too():
    params, tokens, expected = _package_model("gemma1_mqa")
    model = gemma.gemma_from_pretrained_checkpoint(
        {"transformer": params["params"]}, preset_name=CASES["gemma1_mqa"][1]
    )
    np.testing.assert_allclose(_our_logits(model, tokens), expected, atol=1e-4, rtol=0)


def test_bfloat16_checkpoint_with_upcast_activations():
    params, tokens, _ = _package_model("gemma2_gqa")
    bf16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    fields, preset = CASES["gemma2_gqa"]
    # The oracle: the package on the bfloat16-rounded weights, computing in float32.
    rounded = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), bf16)
    config = gemma_transformer.TransformerConfig(
        **{**_SIZES, "final_logit_softcap": None, **fields}
    )
    positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((9, 9), bool)), (2, 9, 9))
    expected, _ = gemma_transformer.Transformer(config).apply(
        rounded, tokens, positions, None, mask
    )
    model = gemma.gemma_from_pretrained_checkpoint(
        _as_orbax_checkpoint(bf16), upcast_activations_to_float32=True, preset_name=preset
    )
    assert {p.value.dtype for p in sk.unbind_params(model)[1]} == {jnp.dtype(jnp.bfloat16)}
    # The (1 + scale) norm weights are rounded to bfloat16 once more, as penzai stores them.
    np.testing.assert_allclose(_our_logits(model, tokens), np.asarray(expected), atol=0.05)


def test_auto_preset_recognizes_released_sizes_and_rejects_others():
    params, _, _ = _package_model("gemma1_mqa")
    with pytest.raises(ValueError, match=r"no released Gemma has 2 layers.*GemmaPreset"):
        gemma.gemma_from_pretrained_checkpoint(_as_orbax_checkpoint(params))
    with pytest.raises(ValueError, match=r"preset is for 18 layers.*has 2"):
        gemma.gemma_from_pretrained_checkpoint(_as_orbax_checkpoint(params), preset_name="gemma_2b")
    assert (
        gemma.GEMMA_PRESETS["gemma3_1b"].num_layers == gemma.GEMMA_PRESETS["gemma2_2b"].num_layers
    )
    assert gemma.GEMMA_PRESETS["gemma3_1b"].has_qk_norm


def test_missing_array_is_named():
    params, _, _ = _package_model("gemma1_mqa")
    tree = _as_orbax_checkpoint(params)
    del tree["transformer/layer_1/mlp/linear"]
    with pytest.raises(ValueError, match=r"layer_1/mlp/linear"):
        gemma.gemma_from_pretrained_checkpoint(tree, preset_name=CASES["gemma1_mqa"][1])
