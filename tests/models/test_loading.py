"""load_pretrained / save_pretrained / load_tokenizer on Hugging Face directories (safetensors).

Tiny random `transformers` models are saved with their own `save_pretrained` and
serve as the oracle; the checks run offline.
"""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
tokenizers = pytest.importorskip("tokenizers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import loading  # noqa: E402
from saikei.models.transformer.variants import llamalike  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    TINY_LLAMA,
    hf_logits,
    our_logits,
    random_hf_model,
    random_tokens,
)

torch.set_num_threads(1)

_TINY = dict(TINY_LLAMA, num_key_value_heads=2)


def _hf_model(cls_name: str = "Llama", **overrides):
    return random_hf_model(f"{cls_name}Config", f"{cls_name}ForCausalLM", {**_TINY, **overrides})


def _saved(tmp_path, model, name="hf", **kwargs) -> str:
    path = str(tmp_path / name)
    model.save_pretrained(path, **kwargs)
    return path


def _params(lm) -> dict:
    _, params = sk.unbind_params(lm)
    return {p.label: p.value for p in params}


def _per_layer_config(config):
    """The config with `attention_type` spelled out per layer (one type or a tuple of types)."""
    types = config.attention_type
    if not isinstance(types, tuple | list):
        types = (types,) * config.num_decoder_blocks
    return dataclasses.replace(config, attention_type=tuple(types))


def _assert_same_model(a, b) -> None:
    unbound_a, _ = sk.unbind_params(a)
    unbound_b, _ = sk.unbind_params(b)
    assert jax.tree_util.tree_structure(unbound_a.body) == jax.tree_util.tree_structure(
        unbound_b.body
    )
    assert _per_layer_config(a.metadata.config) == _per_layer_config(b.metadata.config)
    pa, pb = _params(a), _params(b)
    assert sorted(pa) == sorted(pb)
    for label in pa:
        assert pa[label].named_shape == pb[label].named_shape, label
        assert pa[label].dtype == pb[label].dtype, label
        np.testing.assert_array_equal(
            np.asarray(pa[label].unwrap(*pa[label].axis_names)),
            np.asarray(pb[label].unwrap(*pa[label].axis_names)),
            err_msg=label,
        )


# --- Loading ---------------------------------------------------------------------

CASES = {
    "llama_gqa": ("Llama", {}),
    "llama_tied": ("Llama", dict(tie_word_embeddings=True)),
    "qwen2": ("Qwen2", {}),
    "qwen3": ("Qwen3", dict(head_dim=16)),
}


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(tmp_path, case, use_layer_stack):
    cls_name, overrides = CASES[case]
    model = _hf_model(cls_name, **overrides)
    lm = loading.load_pretrained(
        _saved(tmp_path, model), use_layer_stack=use_layer_stack, progress=False
    )
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)
    assert lm.metadata.hf_model_type == model.config.model_type


def test_sharded_checkpoint_loads(tmp_path):
    model = _hf_model()
    path = _saved(tmp_path, model, max_shard_size="20KB")
    shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    assert "model.safetensors.index.json" in os.listdir(path) and len(shards) > 2
    lm = loading.load_pretrained(path, progress=False)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


def test_bfloat16_checkpoint_loads(tmp_path):
    path = _saved(tmp_path, _hf_model().to(torch.bfloat16))
    with open(os.path.join(path, "config.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokens = random_tokens()
    lm = loading.load_pretrained(path, progress=False)
    np.testing.assert_allclose(
        our_logits(lm, tokens), hf_logits(reference, tokens), atol=1e-5, rtol=0
    )
    lm16 = loading.load_pretrained(path, dtype="bfloat16", progress=False)
    assert {v.dtype for v in _params(lm16).values()} == {jnp.dtype(jnp.bfloat16)}
    # Computing in bfloat16 costs precision, not correctness.
    np.testing.assert_allclose(
        our_logits(lm16, tokens), hf_logits(reference, tokens), atol=0.1, rtol=0
    )


def test_bfloat16_weights_with_float32_activations(tmp_path):
    # bfloat16 storage, float32 compute: the same numbers as the float32 model
    # holding the bfloat16-rounded weights, which is what HF computes when it
    # loads the bfloat16 checkpoint in float32.
    path = _saved(tmp_path, _hf_model().to(torch.bfloat16))
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lm = loading.load_pretrained(path, dtype="bfloat16", activation_dtype="float32", progress=False)
    assert {v.dtype for v in _params(lm).values()} == {jnp.dtype(jnp.bfloat16)}
    assert lm.metadata.activation_dtype == jnp.float32
    tokens = random_tokens()
    logits = our_logits(lm, tokens)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, hf_logits(reference, tokens), atol=1e-5, rtol=0)


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    loading.load_pretrained(_saved(tmp_path, _hf_model()), progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "Loading hf" in captured.err


def test_progress_counter_without_tqdm(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # `import` now raises ImportError
    loading.load_pretrained(_saved(tmp_path, _hf_model()), progress=True)
    err = capsys.readouterr().err
    # One tensor per parameter of the block-list model (a LayerStack stacks them).
    unstacked = loading.load_pretrained(str(tmp_path / "hf"), progress=False, use_layer_stack=False)
    n = len(_params(unstacked))
    assert f"Loading hf: {n}/{n} tensors (100%)" in err


# --- Saving ----------------------------------------------------------------------


def _random_llamalike(**overrides):
    cfg = llamalike.LlamalikeTransformerConfig(
        num_kv_heads=2,
        query_head_multiplier=2,
        embedding_dim=32,
        projection_dim=8,
        mlp_hidden_dim=48,
        num_decoder_blocks=2,
        vocab_size=64,
        **overrides,
    )
    return llamalike.build_llamalike_transformer(cfg, jax.random.key(0))


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_saved_model_loads_in_transformers_with_same_logits(tmp_path, tied):
    lm = _random_llamalike(tie_embedder_and_logits=tied)
    loading.save_pretrained(lm, tmp_path / "out")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32
    ).eval()
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_save_then_load_gives_an_equal_model(tmp_path, use_layer_stack):
    lm = loading.load_pretrained(
        _saved(tmp_path, _hf_model("Qwen2")), use_layer_stack=use_layer_stack, progress=False
    )
    loading.save_pretrained(lm, tmp_path / "again")
    again = loading.load_pretrained(
        tmp_path / "again", use_layer_stack=use_layer_stack, progress=False
    )
    _assert_same_model(lm, again)
    assert again.metadata.hf_model_type == "qwen2"


def test_transformers_round_trip_through_saikei(tmp_path):
    model = _hf_model("Qwen3", head_dim=16)
    lm = loading.load_pretrained(_saved(tmp_path, model), progress=False)
    loading.save_pretrained(lm, tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32
    ).eval()
    assert type(back).__name__ == "Qwen3ForCausalLM"
    for name, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_bfloat16_model_saves_as_bfloat16(tmp_path):
    lm = loading.load_pretrained(_saved(tmp_path, _hf_model()), dtype=jnp.bfloat16, progress=False)
    loading.save_pretrained(lm, tmp_path / "bf16")
    with open(tmp_path / "bf16" / "config.json") as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"
    from safetensors import safe_open

    with safe_open(tmp_path / "bf16" / "model.safetensors", "numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    again = loading.load_pretrained(tmp_path / "bf16", dtype="bfloat16", progress=False)
    _assert_same_model(lm, again)


def test_save_refuses_a_non_empty_directory_unless_overwrite(tmp_path):
    lm = _random_llamalike()
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        loading.save_pretrained(lm, target)
    # A stale sharded index would shadow the new weights in other loaders: it goes.
    _hf_model().save_pretrained(target, max_shard_size="20KB")
    assert "model.safetensors.index.json" in os.listdir(target)
    loading.save_pretrained(lm, target, overwrite=True)
    left = sorted(os.listdir(target))
    assert "model.safetensors.index.json" not in left and "notes.txt" in left
    assert [f for f in left if f.endswith(".safetensors")] == ["model.safetensors"]
    _assert_same_model(lm, loading.load_pretrained(target, progress=False, use_layer_stack=False))


def test_save_refuses_a_model_without_builder_config():
    lm = _random_llamalike()
    bare = type(lm)(body=lm.body, metadata=type(lm.metadata)({"heads": 1}, {}, 32, 8, 48, 64))
    with pytest.raises(ValueError, match="no builder config"):
        loading.save_pretrained(bare, "/nonexistent-never-written")


# --- Errors ----------------------------------------------------------------------


def test_missing_path_config_and_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loading.load_pretrained(tmp_path / "nope", progress=False)
    path = _saved(tmp_path, _hf_model())
    os.remove(os.path.join(path, "config.json"))
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        loading.load_pretrained(path, progress=False)
    path = _saved(tmp_path, _hf_model(), name="noweights")
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        loading.load_pretrained(path, progress=False)


def test_pickle_only_directory_is_refused_without_unpickling(tmp_path):
    path = _saved(tmp_path, _hf_model())
    os.remove(os.path.join(path, "model.safetensors"))
    # Not a valid pickle at all: any attempt to unpickle it would fail differently.
    with open(os.path.join(path, "pytorch_model.bin"), "wb") as f:
        f.write(b"\x80\x04 definitely not read")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*never unpickles"):
        loading.load_pretrained(path, progress=False)


def test_unsupported_config_value_names_path_and_field(tmp_path):
    path = _saved(tmp_path, _hf_model())
    config_file = os.path.join(path, "config.json")
    with open(config_file) as f:
        config = json.load(f)
    config["hidden_act"] = "relu"
    with open(config_file, "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=rf"{path}.*hidden_act='relu'"):
        loading.load_pretrained(path, progress=False)
    config["model_type"] = "bert"
    with open(config_file, "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=rf"{path}.*unsupported model_type='bert'"):
        loading.load_pretrained(path, progress=False)


def _rewrite_weights(path: str, edit) -> None:
    file = os.path.join(path, "model.safetensors")
    tensors = dict(safetensors_numpy.load_file(file))
    edit(tensors)
    safetensors_numpy.save_file(tensors, file, metadata={"format": "pt"})


def test_missing_extra_and_misshapen_tensors_are_named(tmp_path):
    path = _saved(tmp_path, _hf_model())
    name = "model.layers.1.mlp.up_proj.weight"
    _rewrite_weights(path, lambda t: t.pop(name))
    with pytest.raises(ValueError, match=rf"missing tensor '{name}' \(expected shape \(48, 32\)\)"):
        loading.load_pretrained(path, progress=False)
    _rewrite_weights(path, lambda t: t.update({name: np.zeros((48, 31), np.float32)}))
    with pytest.raises(ValueError, match=rf"'{name}' has shape \(48, 31\).*expects \(48, 32\)"):
        loading.load_pretrained(path, progress=False)
    _rewrite_weights(
        path,
        lambda t: t.update(
            {name: np.zeros((48, 32), np.float32), "model.layers.0.extra.weight": np.ones(2)}
        ),
    )
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.extra\.weight'.*no place"):
        loading.load_pretrained(path, progress=False)


def test_truncated_safetensors_file_is_refused(tmp_path):
    path = _saved(tmp_path, _hf_model())
    file = os.path.join(path, "model.safetensors")
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        loading.load_pretrained(path, progress=False)


def test_index_pointing_at_missing_shard(tmp_path):
    path = _saved(tmp_path, _hf_model(), max_shard_size="20KB")
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        shard = sorted(set(json.load(f)["weight_map"].values()))[1]
    os.remove(os.path.join(path, shard))
    with pytest.raises(FileNotFoundError, match=rf"'{shard}'.*not in"):
        loading.load_pretrained(path, progress=False)


def test_bad_dtype_and_non_gguf_file(tmp_path):
    with pytest.raises(ValueError, match="not a floating-point dtype"):
        loading.load_pretrained(tmp_path, dtype="int8", progress=False)
    path = _saved(tmp_path, _hf_model())
    with pytest.raises(ValueError, match="not a GGUF file"):
        loading.load_pretrained(os.path.join(path, "config.json"), progress=False)


# --- Tokenizers ------------------------------------------------------------------


def test_load_tokenizer_from_directory(tmp_path):
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=280, show_progress=False)
    tok.train_from_iterator(["the cat sat on the mat"] * 10, trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = loading.load_tokenizer(tmp_path)
    ids = loaded.encode("the cat").ids
    assert ids == tok.encode("the cat").ids and loaded.decode(ids) == "the cat"
    assert loading.load_tokenizer(tmp_path / "tokenizer.json").encode("mat").ids == (
        tok.encode("mat").ids
    )


def test_load_tokenizer_without_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"sentencepiece")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json.*tokenizer\.model"):
        loading.load_tokenizer(tmp_path)
