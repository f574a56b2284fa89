"""Every model family survives treescope's roundtrip mode: its rendered source evaluates back.

`sk.ts.render_to_text(model, roundtrip_mode=True)` of an unbound model (its
parameters are slots) is Python source; evaluated with the `saikei`, `jax`,
`jnp` and `np` modules in scope, it must give a model equal to the original.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saikei
import saikei.models.simple_mlp
import saikei.models.transformer
from saikei import sk
from saikei.models.transformer.variants import (
    _gpt2_hf,
    _llamalike_hf,
    gpt2,
    gpt_neox,
    llamalike,
)

_LLAMA = dict(
    num_kv_heads=2,
    query_head_multiplier=2,
    embedding_dim=16,
    projection_dim=4,
    mlp_hidden_dim=32,
    num_decoder_blocks=4,
    vocab_size=11,
)

_GEMMA_HF = dict(
    vocab_size=32,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
)


def _gemma_config(model_type, **extra):
    return _llamalike_hf.config_from_hf({"model_type": model_type, **_GEMMA_HF, **extra})


def _neox_config(**extra):
    return gpt_neox.GPTNeoXTransformerConfig(
        num_heads=2,
        embedding_dim=16,
        projection_dim=8,
        mlp_hidden_dim=32,
        num_decoder_blocks=2,
        vocab_size=11,
        rotary_pct=0.5,
        **extra,
    )


CONFIGS = {
    "llama_gqa": lambda: llamalike.LlamalikeTransformerConfig(**_LLAMA),
    "llama_bf16_tied_qk_norm": lambda: llamalike.LlamalikeTransformerConfig(
        **_LLAMA,
        tie_embedder_and_logits=True,
        use_qk_norm=True,
        parameter_dtype=jnp.bfloat16,
        activation_dtype=jnp.float32,
    ),
    "gemma": lambda: _gemma_config("gemma", hidden_activation="gelu_pytorch_tanh"),
    "gemma2": lambda: _gemma_config(
        "gemma2",
        sliding_window=4,
        query_pre_attn_scalar=8,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
    ),
    "gemma3_bf16": lambda: _gemma_config(
        "gemma3_text",
        sliding_window=4,
        query_pre_attn_scalar=8,
        sliding_window_pattern=2,
        torch_dtype="bfloat16",
    ),
    "gpt_neox": _neox_config,
    "gpt_neox_sequential": lambda: _neox_config(use_parallel_residual=False),
    "gpt2": lambda: _gpt2_hf.config_from_hf(
        {"model_type": "gpt2", "vocab_size": 11, "n_embd": 16, "n_layer": 2, "n_head": 2}
    ),
}

_BUILDERS = {
    llamalike.LlamalikeTransformerConfig: llamalike.build_llamalike_transformer,
    gpt_neox.GPTNeoXTransformerConfig: gpt_neox.build_gpt_neox_transformer,
    gpt2.GPT2TransformerConfig: gpt2.build_gpt2_transformer,
}

_ENV = {"saikei": saikei, "jax": jax, "jnp": jnp, "np": np}


def _assert_roundtrips(model):
    source = sk.ts.render_to_text(model, roundtrip_mode=True)
    rebuilt = eval(source, dict(_ENV))
    assert rebuilt == model


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("family", list(CONFIGS))
def test_unbound_model_roundtrips(family, use_layer_stack):
    config = CONFIGS[family]()
    config = type(config)(**{**vars(config), "use_layer_stack": use_layer_stack})
    model = _BUILDERS[type(config)](config, None)
    assert sk.select(model).at_instances_of(sk.ParameterSlot).count() > 0
    _assert_roundtrips(model)


def test_model_holds_no_array_outside_its_parameters():
    # The cause of past roundtrip failures: constants stored as jax arrays.
    model = llamalike.build_llamalike_transformer(
        llamalike.LlamalikeTransformerConfig(**_LLAMA, activation_dtype=jnp.bfloat16), None
    )
    arrays = [leaf for leaf in jax.tree_util.tree_leaves(model) if isinstance(leaf, jax.Array)]
    assert arrays == []
    [scale] = {
        layer.by for layer in sk.select(model).at_instances_of(sk.nn.ConstantRescale).get_sequence()
    }
    assert type(scale) is float and scale == 0.5


def test_simple_mlp_roundtrips():
    mlp = saikei.models.simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[3, 5, 2]
    )
    _assert_roundtrips(sk.unbind_params(mlp)[0])


def test_loaded_model_roundtrips_once_unbound():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=16,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
    )
    loaded = saikei.models.transformer.from_huggingface_model(hf, use_layer_stack=True)
    _assert_roundtrips(sk.unbind_params(loaded)[0])
