"""Every hook point of every family equals the matching intermediate of `transformers`.

The oracle is a tiny random Hugging Face model run with eager attention on a
left-padded batch (attention mask and position ids), its intermediates taken
with torch forward hooks and by wrapping each family's
`eager_attention_forward` (which receives queries and keys after RoPE).
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from tests.interp._tiny import tiny_lm  # noqa: E402
from tests.models._hf_helpers import TINY_LLAMA, TINY_SIZES, random_hf_model  # noqa: E402

interp = sk.interp
ATOL = 1e-5

_LLAMA = dict(TINY_LLAMA, num_key_value_heads=2, initializer_range=0.1)
# (config class, model class, config, family); families pick the module paths below.
CASES = {
    "llama_gqa_bias": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(_LLAMA, attention_bias=True, mlp_bias=True),
        "llama",
    ),
    "qwen3_mqa_qk_norm": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(_LLAMA, num_key_value_heads=1, head_dim=8),
        "llama",
    ),
    # Softcaps, post-norms, local/global layers; 3 layers: one stacked pair and one left over.
    "gemma2_softcaps": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            _LLAMA,
            num_hidden_layers=3,
            head_dim=8,
            sliding_window=3,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=1.0,
            final_logit_softcapping=0.5,
        ),
        "gemma_post_norms",
    ),
    "gemma3_pattern": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(_LLAMA, num_hidden_layers=4, head_dim=8, sliding_window=3, sliding_window_pattern=2),
        "gemma_post_norms",
    ),
    "neox_parallel": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(TINY_SIZES, use_parallel_residual=True, rotary_pct=0.25),
        "neox",
    ),
    "neox_sequential": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(TINY_SIZES, use_parallel_residual=False, rotary_pct=0.5),
        "neox",
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16),
        "gpt2",
    ),
}
_MODULES = {
    "LlamaConfig": "llama",
    "Qwen3Config": "qwen3",
    "Gemma2Config": "gemma2",
    "Gemma3TextConfig": "gemma3",
    "GPTNeoXConfig": "gpt_neox",
    "GPT2Config": "gpt2",
}
_SHARPEN = {"query_key_value.weight": 4.0, "c_attn.weight": 4.0}


def _layers(model, family):
    if family == "neox":
        return model.gpt_neox.layers
    if family == "gpt2":
        return model.transformer.h
    return model.model.layers


def _record_hf(model, family, tokens, positions, monkeypatch):
    """Runs the HF model on a left-padded batch; returns {our name: numpy value}."""
    out: dict = {}
    attn: dict = {}
    module = importlib.import_module(
        f"transformers.models.{_MODULES[type(model.config).__name__]}.modeling_"
        f"{_MODULES[type(model.config).__name__]}"
    )
    original = module.eager_attention_forward

    def wrapped(mod, query, key, value, attention_mask, *args, **kwargs):
        result, weights = original(mod, query, key, value, attention_mask, *args, **kwargs)
        attn[mod.layer_idx] = dict(
            q=query, k=key, v=value, mask=attention_mask, z=result, pattern=weights, kwargs=kwargs
        )
        return result, weights

    monkeypatch.setattr(module, "eager_attention_forward", wrapped)
    handles = []

    def on_output(name, index=None):
        def hook(mod, args, output):
            value = output[0] if isinstance(output, tuple) else output
            out[name] = value

        return hook

    def on_input(name):
        def hook(mod, args, kwargs):
            out[name] = args[0] if args else kwargs["hidden_states"]

        return hook

    layers = _layers(model, family)
    for i, layer in enumerate(layers):
        handles.append(
            layer.register_forward_pre_hook(on_input(f"blocks.{i}.resid_pre"), with_kwargs=True)
        )
        handles.append(layer.register_forward_hook(on_output(f"blocks.{i}.resid_post")))
        if family in ("llama", "gemma_post_norms"):
            attn_mod, mlp = layer.self_attn, layer.mlp
            handles.append(mlp.gate_proj.register_forward_hook(on_output(f"blocks.{i}.mlp.pre")))
            handles.append(
                mlp.down_proj.register_forward_pre_hook(
                    on_input(f"blocks.{i}.mlp.post"), with_kwargs=True
                )
            )
            if family == "llama":
                handles.append(attn_mod.register_forward_hook(on_output(f"blocks.{i}.attn_out")))
                handles.append(mlp.register_forward_hook(on_output(f"blocks.{i}.mlp_out")))
                mid = layer.post_attention_layernorm
            else:
                handles.append(
                    layer.post_attention_layernorm.register_forward_hook(
                        on_output(f"blocks.{i}.attn_out")
                    )
                )
                handles.append(
                    layer.post_feedforward_layernorm.register_forward_hook(
                        on_output(f"blocks.{i}.mlp_out")
                    )
                )
                mid = layer.pre_feedforward_layernorm
        elif family == "neox":
            attn_mod, mlp = layer.attention, layer.mlp
            handles.append(
                mlp.dense_h_to_4h.register_forward_hook(on_output(f"blocks.{i}.mlp.pre"))
            )
            handles.append(
                mlp.dense_4h_to_h.register_forward_pre_hook(
                    on_input(f"blocks.{i}.mlp.post"), with_kwargs=True
                )
            )
            handles.append(attn_mod.register_forward_hook(on_output(f"blocks.{i}.attn_out")))
            handles.append(mlp.register_forward_hook(on_output(f"blocks.{i}.mlp_out")))
            mid = None if model.config.use_parallel_residual else layer.post_attention_layernorm
        else:
            attn_mod, mlp = layer.attn, layer.mlp
            handles.append(mlp.c_fc.register_forward_hook(on_output(f"blocks.{i}.mlp.pre")))
            handles.append(
                mlp.c_proj.register_forward_pre_hook(
                    on_input(f"blocks.{i}.mlp.post"), with_kwargs=True
                )
            )
            handles.append(attn_mod.register_forward_hook(on_output(f"blocks.{i}.attn_out")))
            handles.append(mlp.register_forward_hook(on_output(f"blocks.{i}.mlp_out")))
            mid = layer.ln_2
        if mid is not None:
            handles.append(
                mid.register_forward_pre_hook(on_input(f"blocks.{i}.resid_mid"), with_kwargs=True)
            )
    if family == "neox":
        final = model.gpt_neox.final_layer_norm
        handles.append(model.gpt_neox.embed_in.register_forward_hook(on_output("embed")))
    elif family == "gpt2":
        final = model.transformer.ln_f
        handles.append(model.transformer.wte.register_forward_hook(on_output("embed")))
        handles.append(model.transformer.wpe.register_forward_hook(on_output("pos_embed")))
    else:
        final = model.model.norm
        handles.append(layers[0].register_forward_pre_hook(on_input("embed"), with_kwargs=True))
    handles.append(final.register_forward_hook(on_output("final_norm")))
    try:
        with torch.no_grad():
            logits = model(
                torch.tensor(tokens),
                attention_mask=torch.tensor(positions >= 0, dtype=torch.long),
                position_ids=torch.tensor(np.maximum(positions, 0)),
            ).logits
    finally:
        for handle in handles:
            handle.remove()
    out["logits"] = logits
    if family == "gpt2":
        # HF adds position embeddings of shape (batch, seq, hidden) as is.
        out["pos_embed"] = out["pos_embed"].expand_as(out["embed"])
    out = {name: value.detach().numpy() for name, value in out.items()}
    for i, rec in attn.items():
        q, k, v = (rec[n].detach().numpy() for n in "qkv")
        out[f"blocks.{i}.attn.q"] = q.transpose(0, 2, 1, 3)
        out[f"blocks.{i}.attn.k"] = k.transpose(0, 2, 1, 3)
        out[f"blocks.{i}.attn.v"] = v.transpose(0, 2, 1, 3)
        out[f"blocks.{i}.attn.pattern"] = rec["pattern"].detach().numpy()
        z = rec["z"].detach().numpy()
        out[f"blocks.{i}.attn.z"] = z
        # Scores: the eager formula on HF's own queries and keys; compared where unmasked.
        scaling = rec["kwargs"].get("scaling") or q.shape[-1] ** -0.5
        keys = np.repeat(k, q.shape[1] // k.shape[1], axis=1)
        scores = np.einsum("bhqd,bhkd->bhqk", q, keys) * scaling
        softcap = rec["kwargs"].get("softcap")
        if softcap is not None:
            scores = np.tanh(scores / softcap) * softcap
        mask = rec["mask"].detach().numpy()
        allowed = mask if mask.dtype == bool else mask == 0
        out[f"blocks.{i}.attn.scores"] = (scores, np.broadcast_to(allowed, scores.shape))
        # Per-head results: each head's slice of the output projection.
        layer = _layers(model, family)[i]
        heads, hd = z.shape[2], z.shape[3]
        if family == "gpt2":
            w = layer.attn.c_proj.weight.detach().numpy()  # (in, out)
            w_heads = w.reshape(heads, hd, -1)
        else:
            dense = layer.attention.dense if family == "neox" else layer.self_attn.o_proj
            w_heads = dense.weight.detach().numpy().T.reshape(heads, hd, -1)
        out[f"blocks.{i}.attn.result"] = np.einsum("bshd,hde->bshe", z, w_heads)
    return out


_AXES = {
    "attn.q": ("batch", "seq", "heads", "projection"),
    "attn.z": ("batch", "seq", "heads", "projection"),
    "attn.k": ("batch", "seq", "kv_heads", "projection"),
    "attn.v": ("batch", "seq", "kv_heads", "projection"),
    "attn.scores": ("batch", "heads", "seq", "kv_seq"),
    "attn.pattern": ("batch", "heads", "seq", "kv_seq"),
    "attn.result": ("batch", "seq", "heads", "embedding"),
    "mlp.pre": ("batch", "seq", "neurons"),
    "mlp.post": ("batch", "seq", "neurons"),
    "logits": ("batch", "seq", "vocabulary"),
}


def _site(name):
    return name.split(".", 2)[2] if name.startswith("blocks.") else name


def _padded_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 64, size=(2, 7))
    positions = np.tile(np.arange(7), (2, 1))
    tokens[1, :3] = 0  # three pads in front of the second row
    positions[1, :3] = -1
    positions[1, 3:] = np.arange(4)
    return tokens, positions


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_hook_point_matches_transformers(case, use_layer_stack, monkeypatch):
    config_class, model_class, config, family = CASES[case]
    model = random_hf_model(config_class, model_class, config, sharpen=_SHARPEN)
    model.set_attn_implementation("eager")
    tokens, positions = _padded_batch()
    expected = _record_hf(model, family, tokens, positions, monkeypatch)

    lm = interp.with_hook_points(
        _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    )
    names = interp.hook_names(lm)
    logits, cache = interp.run_with_cache(
        lm,
        sk.nx.wrap(jnp.asarray(tokens), "batch", "seq"),
        names=lambda n: True,
        token_positions=sk.nx.wrap(jnp.asarray(positions), "batch", "seq"),
    )
    assert list(cache) == names
    assert set(names) == set(expected), set(names) ^ set(expected)
    real = positions >= 0
    for name in names:
        axes = _AXES.get(_site(name), ("batch", "seq", "embedding"))
        ours = np.asarray(cache[name].unwrap(*axes))
        want = expected[name]
        if _site(name) == "attn.scores":
            want, allowed = want
            rows = allowed & real[:, None, :, None]
            np.testing.assert_allclose(ours[rows], want[rows], atol=ATOL, rtol=0, err_msg=name)
            # Masked entries are very negative, so the softmax gives them no weight.
            assert (ours[~allowed] < -1e30).all(), name
            continue
        if "seq" in axes and axes.index("seq") == 2:  # (batch, heads, seq, kv_seq)
            ours, want = ours.transpose(0, 2, 1, 3), want.transpose(0, 2, 1, 3)
        np.testing.assert_allclose(ours[real], want[real], atol=ATOL, rtol=0, err_msg=name)
    np.testing.assert_allclose(
        np.asarray(logits.unwrap("batch", "seq", "vocabulary"))[real],
        expected["logits"][real],
        atol=ATOL,
        rtol=0,
    )


MODELS = ["llama_list", "gemma2_stack", "mqa_stack", "neox_parallel_stack", "gpt2_list"]
_model = tiny_lm


@pytest.mark.parametrize("which", MODELS)
def test_hook_points_leave_the_logits_unchanged(which):
    lm = sk.freeze_params(_model(which))
    tokens = sk.nx.wrap(jnp.array([[3, 1, 4, 1, 5]]), "batch", "seq")
    run = jax.jit(lambda model, t: model(t))
    hooked = interp.with_hook_points(lm)
    np.testing.assert_array_equal(
        np.asarray(run(hooked, tokens).data_array), np.asarray(run(lm, tokens).data_array)
    )


@pytest.mark.parametrize("which", MODELS)
def test_with_hook_points_is_idempotent(which):
    hooked = interp.with_hook_points(_model(which))
    assert interp.with_hook_points(hooked) is hooked
    count = sk.select(hooked).at_instances_of(interp.HookPoint).count()
    assert (
        sk.select(interp.with_hook_points(hooked)).at_instances_of(interp.HookPoint).count()
        == count
    )


def test_hook_names_follow_execution_order_across_a_period_stack():
    hooked = interp.with_hook_points(_model("gemma2_stack"))
    names = interp.hook_names(hooked)
    blocks = [int(n.split(".")[1]) for n in names if n.startswith("blocks.")]
    assert blocks == sorted(blocks) and sorted(set(blocks)) == list(range(5))
    assert names[0] == "embed" and names[-2:] == ["final_norm", "logits"]
    per_block = [n.split(".", 2)[2] for n in names if n.startswith("blocks.0.")]
    assert per_block == [
        "resid_pre",
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.scores",
        "attn.pattern",
        "attn.z",
        "attn.result",
        "attn_out",
        "resid_mid",
        "mlp.pre",
        "mlp.post",
        "mlp_out",
        "resid_post",
    ]
    assert len(names) == len(set(names))


def test_parallel_blocks_have_no_resid_mid():
    names = interp.hook_names(interp.with_hook_points(_model("neox_parallel_stack")))
    assert not [n for n in names if n.endswith("resid_mid")]
    assert "blocks.2.attn_out" in names and "blocks.2.mlp_out" in names


def test_gpt2_has_pos_embed_after_embed():
    names = interp.hook_names(interp.with_hook_points(_model("gpt2_list")))
    assert names[:3] == ["embed", "pos_embed", "blocks.0.resid_pre"]


def test_stacked_hook_point_knows_its_layer_while_the_stack_runs():
    # A layer beside each stacked resid_post hook point adds its block index times 1000.
    @sk.pytree_dataclass
    class AddLayerIndex(sk.nn.Layer):
        layer_index: sk.nx.NamedArray

        def __call__(self, value, /, **side_inputs):
            return value + 1000.0 * self.layer_index.unwrap()

    hooked = interp.with_hook_points(_model("mqa_stack"))
    marked = (
        sk.select(hooked)
        .at_instances_of(interp.HookPoint)
        .where(lambda h: h.site == "resid_post")
        .apply(lambda h: sk.nn.Sequential([h, AddLayerIndex(h.layer_index)]))
    )
    _, cache = interp.run_with_cache(
        marked, sk.nx.wrap(jnp.arange(3), "seq"), names=["resid_pre", "resid_post"]
    )
    for i in range(1, 4):
        diff = cache[f"blocks.{i}.resid_pre"] - cache[f"blocks.{i - 1}.resid_post"]
        np.testing.assert_allclose(np.asarray(diff.data_array), 1000.0 * (i - 1), atol=1e-2)


def test_to_user_and_from_user_are_inverse_in_hf_head_order():
    hook = interp.HookPoint(
        "blocks.0.attn.q",
        head_axes=(("head_groups", 2), ("query_heads", 3)),
        user_head_axis="heads",
    )
    value = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "head_groups", "query_heads")
    user = hook.to_user(value)
    # Query head h belongs to key/value group h // 3.
    assert user.unwrap("heads").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    back = hook.from_user(user)
    np.testing.assert_array_equal(
        back.unwrap("head_groups", "query_heads"), value.unwrap("head_groups", "query_heads")
    )


def test_hook_point_rejects_a_placeholder_name_without_layers():
    with pytest.raises(ValueError, match="placeholder"):
        interp.HookPoint("blocks.{layer}.resid_pre")


def test_with_hook_points_rejects_other_models():
    with pytest.raises(TypeError, match="TransformerLM"):
        interp.with_hook_points(sk.nn.Identity())


def test_load_pretrained_inserts_hook_points(tmp_path):
    from saikei.models.transformer import loading

    lm = _model("llama_list")
    loading.save_pretrained(lm, tmp_path, overwrite=True)
    loaded = loading.load_pretrained(tmp_path, progress=False, hook_points=True)
    assert interp.hook_names(loaded) == interp.hook_names(interp.with_hook_points(lm))
    tokens = sk.nx.wrap(jnp.arange(4), "seq")
    np.testing.assert_allclose(
        np.asarray(loaded(tokens).data_array), np.asarray(lm(tokens).data_array), atol=1e-6
    )
