"""GGUF reading: tiny GGUF files written here the way llama.cpp's converter writes them.

The oracles are the original `transformers` model the file was written from and
`transformers` loading the same GGUF file (`from_pretrained(..., gguf_file=...)`).
"""

import os
import shutil

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from saikei.models.transformer import _gguf, loading  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    TINY_LLAMA,
    hf_logits,
    our_logits,
    random_hf_model,
    random_tokens,
)

torch.set_num_threads(1)

Q = gguf.GGMLQuantizationType
_TINY = dict(TINY_LLAMA, intermediate_size=64, num_key_value_heads=2)

# HF module names -> GGUF names, as llama.cpp's converter names them.
_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "post_attention_layernorm": "ffn_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_GEMMA23_BLOCK = {**_BLOCK, "post_attention_layernorm": "post_attention_norm"}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _gguf_name(hf_name: str, arch: str) -> str:
    module, _, suffix = hf_name.rpartition(".")
    if module in _TOP:
        return f"{_TOP[module]}.{suffix}"
    _, _, layer, rest = module.split(".", 3)
    table = _GEMMA23_BLOCK if arch in ("gemma2", "gemma3") else _BLOCK
    return f"blk.{layer}.{table[rest]}.{suffix}"


def _llamacpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's rows go from (half, pair) to (pair, half) order."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _hf_model(cls_name: str, config_name: str | None = None, **overrides):
    return random_hf_model(
        f"{config_name or cls_name}Config", f"{cls_name}ForCausalLM", {**_TINY, **overrides}
    )


def _byte_level_vocab(size: int) -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary of exactly `size` tokens (and its merges), trained here."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=size,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    corpus = ["the cat sat on the mat", "the dog ate the cat's hat", "that is that"] * 20
    tok.train_from_iterator(corpus, trainer)
    data = tok.to_str()
    import json

    model = json.loads(data)["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def _write(path, arch: str, metadata: dict, tensors: dict, qtypes: dict | None = None) -> None:
    """Writes a GGUF file: metadata as (gguf value type, value), tensors as float32 arrays."""
    writer = gguf.GGUFWriter(path, arch)
    for key, (vtype, value) in metadata.items():
        if vtype == "array":
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, vtype)
    for name, value in tensors.items():
        qtype = (qtypes or {}).get(name, Q.F32)
        if qtype == Q.F32:
            writer.add_tensor(name, np.ascontiguousarray(value, np.float32))
        elif qtype == Q.F16:
            writer.add_tensor(name, np.ascontiguousarray(value, np.float16))
        elif value.dtype == np.uint8:  # raw blocks, for types gguf cannot quantize to
            writer.add_tensor(name, value, raw_dtype=qtype)
        else:
            writer.add_tensor(
                name, gguf.quants.quantize(value.astype(np.float32), qtype), raw_dtype=qtype
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


V = gguf.GGUFValueType


def _model_metadata(arch: str, config, *, tokenizer: bool = True) -> dict:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = config.rope_parameters
    theta = rope["full_attention" if "full_attention" in rope else "rope_theta"]
    theta = theta["rope_theta"] if isinstance(theta, dict) else theta
    meta = {
        f"{arch}.block_count": (V.UINT32, config.num_hidden_layers),
        f"{arch}.context_length": (V.UINT32, 128),
        f"{arch}.embedding_length": (V.UINT32, config.hidden_size),
        f"{arch}.feed_forward_length": (V.UINT32, config.intermediate_size),
        f"{arch}.attention.head_count": (V.UINT32, config.num_attention_heads),
        f"{arch}.attention.head_count_kv": (V.UINT32, config.num_key_value_heads),
        f"{arch}.attention.layer_norm_rms_epsilon": (V.FLOAT32, config.rms_norm_eps),
        f"{arch}.rope.freq_base": (V.FLOAT32, theta),
    }
    if arch == "llama":
        meta[f"{arch}.rope.dimension_count"] = (V.UINT32, head_dim)
        meta[f"{arch}.vocab_size"] = (V.UINT32, config.vocab_size)
    else:
        meta[f"{arch}.attention.key_length"] = (V.UINT32, head_dim)
        meta[f"{arch}.attention.value_length"] = (V.UINT32, head_dim)
    if getattr(config, "sliding_window", None) and arch.startswith("gemma"):
        meta[f"{arch}.attention.sliding_window"] = (V.UINT32, config.sliding_window)
    if arch == "gemma2":
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            meta[f"{arch}.{key}"] = (V.FLOAT32, getattr(config, key))
    if tokenizer:
        # One printable byte-level character per id: a tokenizer exactly the model's size.
        tokens = [chr(33 + i) for i in range(config.vocab_size - 1)] + ['"#']
        merges = ['" #']
        meta.update(
            {
                "tokenizer.ggml.model": (V.STRING, "gpt2"),
                "tokenizer.ggml.pre": (V.STRING, "default"),
                "tokenizer.ggml.tokens": ("array", tokens),
                "tokenizer.ggml.merges": ("array", merges),
                "tokenizer.ggml.token_type": ("array", [3] + [1] * (len(tokens) - 1)),
                "tokenizer.ggml.bos_token_id": (V.UINT32, 0),
                "tokenizer.ggml.eos_token_id": (V.UINT32, 0),
            }
        )
    return meta


def _gguf_from_hf(model, arch: str, path, qtypes=None) -> str:
    """Writes `model` as llama.cpp's converter would (layout fix-ups included)."""
    config = model.config
    tensors = {}
    for hf_name, value in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        value = value.detach().numpy().astype(np.float32)
        if arch == "llama" and ".self_attn.q_proj." in hf_name:
            value = _llamacpp_permute(value, config.num_attention_heads)
        if arch == "llama" and ".self_attn.k_proj." in hf_name:
            value = _llamacpp_permute(value, config.num_key_value_heads)
        if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
            value = value + 1
        tensors[_gguf_name(hf_name, arch)] = value
    qtypes = {k: v for k, v in (qtypes or {}).items() if k in tensors}
    _write(str(path), arch, _model_metadata(arch, config), tensors, qtypes)
    return str(path)


def _bytes_of(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _transformers_from_gguf(path: str):
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()


# --- Models ----------------------------------------------------------------------


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_llama_gguf_matches_source_model_and_transformers(tmp_path, use_layer_stack):
    model = _hf_model("Llama")
    path = _gguf_from_hf(model, "llama", tmp_path / "llama.gguf")
    lm = loading.load_pretrained(path, use_layer_stack=use_layer_stack, progress=False)
    tokens = random_tokens()
    ours = our_logits(lm, tokens)
    np.testing.assert_allclose(ours, hf_logits(model, tokens), atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        ours, hf_logits(_transformers_from_gguf(path), tokens), atol=1e-5, rtol=0
    )


def test_llama_query_key_permutation_matters(tmp_path):
    # Written without llama.cpp's permutation, the file must load to different logits:
    # the un-permutation is real, not a no-op that happens to pass.
    model = _hf_model("Llama")
    path = str(tmp_path / "plain.gguf")
    tensors = {_gguf_name(k, "llama"): v.detach().numpy() for k, v in model.state_dict().items()}
    _write(path, "llama", _model_metadata("llama", model.config), tensors)
    tokens = random_tokens()
    ours = our_logits(loading.load_pretrained(path, progress=False), tokens)
    assert np.abs(ours - hf_logits(model, tokens)).max() > 1e-3


def test_quantized_llama_gguf_matches_transformers(tmp_path):
    model = _hf_model("Llama", tie_word_embeddings=True)
    qtypes = {"token_embd.weight": Q.F16}
    for i in range(2):
        qtypes.update(
            {
                f"blk.{i}.attn_q.weight": Q.Q8_0,
                f"blk.{i}.attn_k.weight": Q.Q4_0,
                f"blk.{i}.attn_v.weight": Q.Q5_0,
                f"blk.{i}.attn_output.weight": Q.Q5_1,
                f"blk.{i}.ffn_gate.weight": Q.Q4_1,
                f"blk.{i}.ffn_up.weight": Q.BF16,
                f"blk.{i}.ffn_down.weight": Q.Q8_0,
            }
        )
    path = _gguf_from_hf(model, "llama", tmp_path / "q.gguf", qtypes)
    lm = loading.load_pretrained(path, progress=False)
    tokens = random_tokens()
    ours = our_logits(lm, tokens)
    np.testing.assert_allclose(
        ours, hf_logits(_transformers_from_gguf(path), tokens), atol=1e-5, rtol=0
    )
    # Quantization error is visible, but small against the float model.
    diff = np.abs(ours - hf_logits(model, tokens)).max()
    assert 1e-5 < diff < 0.1


@pytest.mark.parametrize(
    "cls_name, arch, overrides",
    [
        ("Qwen2", "qwen2", {}),
        ("Qwen3", "qwen3", {}),
        # transformers' GGUF loader ignores qwen3.attention.key_length, so it is no
        # oracle for a head_dim other than hidden_size / heads; the source model is.
        ("Qwen3", "qwen3", {"head_dim": 16}),
    ],
    ids=["qwen2", "qwen3", "qwen3_head_dim"],
)
def test_qwen_gguf_matches_source_model(tmp_path, cls_name, arch, overrides):
    model = _hf_model(cls_name, **overrides)
    path = _gguf_from_hf(model, arch, tmp_path / f"{arch}.gguf")
    lm = loading.load_pretrained(path, progress=False)
    tokens = random_tokens()
    ours = our_logits(lm, tokens)
    np.testing.assert_allclose(ours, hf_logits(model, tokens), atol=1e-5, rtol=0)
    if not overrides:
        np.testing.assert_allclose(
            ours, hf_logits(_transformers_from_gguf(path), tokens), atol=1e-5, rtol=0
        )


GEMMAS = {
    # head_dim 256 makes llama.cpp's query scale (1/sqrt(head_dim)) and transformers'
    # default query_pre_attn_scalar (256) agree, so transformers is an oracle here too.
    "gemma": ("Gemma", "Gemma", dict(head_dim=256, num_key_value_heads=1)),
    "gemma2": (
        "Gemma2",
        "Gemma2",
        dict(
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=4,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            num_hidden_layers=4,
        ),
    ),
    "gemma3": (
        "Gemma3",
        "Gemma3Text",
        dict(
            num_hidden_layers=6,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=4,
        ),
    ),
}


@pytest.mark.parametrize("arch", list(GEMMAS))
def test_gemma_gguf_matches_source_model_and_transformers(tmp_path, arch):
    cls_name, config_name, overrides = GEMMAS[arch]
    model = _hf_model(cls_name, config_name, tie_word_embeddings=True, **overrides)
    path = _gguf_from_hf(model, arch, tmp_path / f"{arch}.gguf")
    lm = loading.load_pretrained(path, progress=False)
    tokens = random_tokens()
    ours = our_logits(lm, tokens)
    np.testing.assert_allclose(ours, hf_logits(model, tokens), atol=1e-5, rtol=0)
    if arch != "gemma":  # transformers reads no Gemma 1 GGUF files
        np.testing.assert_allclose(
            ours, hf_logits(_transformers_from_gguf(path), tokens), atol=1e-5, rtol=0
        )


def test_gemma3_config_from_gguf_metadata():
    meta = {
        "general.architecture": "gemma3",
        "gemma3.block_count": 18,
        "gemma3.embedding_length": 640,
        "gemma3.feed_forward_length": 2048,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        "gemma3.attention.layer_norm_rms_epsilon": 1e-6,
        "gemma3.attention.sliding_window": 512,
        "gemma3.rope.freq_base": 1e6,
        "tokenizer.ggml.tokens": ["a"] * 10,
    }
    cfg = _gguf.hf_config_from_gguf(meta, {"token_embd.weight": (10, 640)})
    assert cfg["model_type"] == "gemma3_text"
    assert cfg["query_pre_attn_scalar"] == 256
    assert cfg["rope_theta"] == 1e6 and cfg["rope_local_base_freq"] == 10_000.0
    assert cfg["layer_types"][5] == "full_attention" and cfg["layer_types"][4] == (
        "sliding_attention"
    )
    assert cfg["sliding_window"] == 512 and cfg["tie_word_embeddings"]


# --- The reader ------------------------------------------------------------------


def test_reader_matches_gguf_package(tmp_path):
    path = str(tmp_path / "r.gguf")
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.normal(size=(3, 64)).astype(np.float32),
        # Random Q4_K / Q6_K blocks (gguf can dequantize these but not quantize to them).
        "b": rng.integers(0, 256, size=(2, 4, 144), dtype=np.uint8),
        "k6": rng.integers(0, 256, size=(3, 210), dtype=np.uint8),
        "c": rng.normal(size=(5,)).astype(np.float32),
    }
    metadata = {
        "general.alignment": (V.UINT32, 64),
        "x.u8": (V.UINT8, 7),
        "x.i8": (V.INT8, -7),
        "x.u16": (V.UINT16, 700),
        "x.i16": (V.INT16, -700),
        "x.i32": (V.INT32, -70000),
        "x.u64": (V.UINT64, 2**40),
        "x.i64": (V.INT64, -(2**40)),
        "x.f64": (V.FLOAT64, 0.125),
        "x.flag": (V.BOOL, True),
        "x.name": (V.STRING, "héllo"),
        "x.ints": ("array", [1, 2, 3]),
        "x.floats": ("array", [0.5, 1.5]),
        "x.strings": ("array", ["a", "", "ü"]),
    }
    _write(path, "llama", metadata, tensors, {"a": Q.Q8_0, "b": Q.Q4_K, "k6": Q.Q6_K})
    reference = gguf.GGUFReader(path)
    with _gguf.GGUFFile(path) as f:
        assert f.version == 3
        for key, (_, value) in metadata.items():
            got = f.metadata[key]
            assert (list(got) if isinstance(got, np.ndarray) else got) == pytest.approx(value)
        assert list(f.tensors) == [t.name for t in reference.tensors]
        for t in reference.tensors:
            expected = gguf.quants.dequantize(t.data, t.tensor_type)
            np.testing.assert_array_equal(
                f.tensor(t.name), expected.reshape(f.tensors[t.name].shape)
            )
        assert f.tensors["b"].shape == (2, 4, 256)


def test_bad_magic_is_refused(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGML" + bytes(100))
    with pytest.raises(ValueError, match="not a GGUF file"):
        loading.load_pretrained(path, progress=False)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="too few for a GGUF header"):
        _gguf.GGUFFile(path)


def test_truncated_tensor_data_names_the_tensor(tmp_path):
    model = _hf_model("Llama")
    path = _gguf_from_hf(model, "llama", tmp_path / "full.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(_bytes_of(path)[:-100])
    with pytest.raises(ValueError, match=r"tensor '.*' ends at byte \d+.*truncated"):
        loading.load_pretrained(cut, progress=False)


def test_truncated_header_is_refused(tmp_path):
    model = _hf_model("Llama")
    path = _gguf_from_hf(model, "llama", tmp_path / "full.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(_bytes_of(path)[:2000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        loading.load_pretrained(cut, progress=False)


def test_unsupported_architecture_is_named(tmp_path):
    path = str(tmp_path / "phi.gguf")
    _write(path, "phi3", {}, {"output_norm.weight": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match=r"phi\.gguf.*architecture 'phi3' is not supported"):
        loading.load_pretrained(path, progress=False)


def test_extra_and_misshapen_tensors_are_named(tmp_path):
    model = _hf_model("Llama")
    config = model.config
    tensors = {_gguf_name(k, "llama"): v.detach().numpy() for k, v in model.state_dict().items()}
    extra = str(tmp_path / "extra.gguf")
    _write(
        extra,
        "llama",
        _model_metadata("llama", config),
        {**tensors, "blk.0.mystery.weight": np.ones(4, np.float32)},
    )
    with pytest.raises(ValueError, match=r"blk\.0\.mystery\.weight.*no place"):
        loading.load_pretrained(extra, progress=False)
    bad = str(tmp_path / "bad.gguf")
    tensors["blk.1.ffn_up.weight"] = np.ones((64, 16), np.float32)
    _write(bad, "llama", _model_metadata("llama", config), tensors)
    with pytest.raises(
        ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\(64, 16\).*\(64, 32\)"
    ):
        loading.load_pretrained(bad, progress=False)


def test_missing_metadata_is_named(tmp_path):
    model = _hf_model("Llama")
    meta = _model_metadata("llama", model.config, tokenizer=False)
    del meta["llama.attention.head_count"]
    path = str(tmp_path / "m.gguf")
    _write(path, "llama", meta, {"output_norm.weight": np.ones(32, np.float32)})
    with pytest.raises(ValueError, match=r"lacks 'llama\.attention\.head_count'"):
        loading.load_pretrained(path, progress=False)


def test_rope_frequency_tensor_is_refused(tmp_path):
    model = _hf_model("Llama")
    tensors = {_gguf_name(k, "llama"): v.detach().numpy() for k, v in model.state_dict().items()}
    tensors["rope_freqs.weight"] = np.ones(4, np.float32)
    path = str(tmp_path / "r.gguf")
    _write(path, "llama", _model_metadata("llama", model.config), tensors)
    with pytest.raises(ValueError, match="rope_freqs"):
        loading.load_pretrained(path, progress=False)


# --- Tokenizers ------------------------------------------------------------------

_TEXTS = [
    "the cat sat on the mat",
    "  that   dog\n\nate  the hat ",
    "The Cat's HAT, that's it!",
    "Ünïcödé 日本 🤖",
    "digits 1234567 and 3.14\r\n\n  x",
    "<|endoftext|>the<|endoftext|> cat",
    "",
]


def _transformers_tokenizer(path: str):
    return transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)
    )


@pytest.mark.parametrize("pre", ["default", "smollm", "llama-bpe", "qwen2"])
def test_byte_level_tokenizer_matches_transformers(tmp_path, pre):
    tokens, merges = _byte_level_vocab(300)
    path = str(tmp_path / "tok.gguf")
    meta = {
        "tokenizer.ggml.model": (V.STRING, "gpt2"),
        "tokenizer.ggml.pre": (V.STRING, pre),
        "tokenizer.ggml.tokens": ("array", tokens),
        "tokenizer.ggml.merges": ("array", merges),
        "tokenizer.ggml.token_type": ("array", [3] + [1] * (len(tokens) - 1)),
        "tokenizer.ggml.bos_token_id": (V.UINT32, 0),
        "tokenizer.ggml.eos_token_id": (V.UINT32, 0),
    }
    _write(path, "llama", meta, {})
    ours = loading.load_tokenizer(path)
    theirs = _transformers_tokenizer(path)
    for text in _TEXTS:
        ids = ours.encode(text).ids
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert ours.encode("<|endoftext|>").ids == [0]
    assert len(ours.encode("the cat").ids) < len("the cat")


def _sentencepiece_vocab() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style BPE vocabulary: specials, 256 byte tokens, pieces by merge order."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, show_progress=False)
    tok.train_from_iterator(["the cat sat on the mat", "that dog ate the hat"] * 20, trainer)
    learned = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + learned
    types = [2, 3, 3] + [6] * 256 + [1] * len(learned)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(learned))]
    return tokens, scores, types


def test_sentencepiece_tokenizer_matches_transformers(tmp_path):
    tokens, scores, types = _sentencepiece_vocab()
    path = str(tmp_path / "spm.gguf")
    meta = {
        "tokenizer.ggml.model": (V.STRING, "llama"),
        "tokenizer.ggml.tokens": ("array", tokens),
        "tokenizer.ggml.scores": ("array", scores),
        "tokenizer.ggml.token_type": ("array", types),
        "tokenizer.ggml.unknown_token_id": (V.UINT32, 0),
        "tokenizer.ggml.bos_token_id": (V.UINT32, 1),
        "tokenizer.ggml.eos_token_id": (V.UINT32, 2),
        "tokenizer.ggml.add_bos_token": (V.BOOL, True),
    }
    _write(path, "llama", meta, {})
    ours = loading.load_tokenizer(path)
    theirs = _transformers_tokenizer(path)
    for text in _TEXTS[:5]:
        ids = ours.encode(text).ids
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    ids = ours.encode("the cat é").ids
    assert ids[0] == 1  # BOS
    assert "<0xC3>" in [ours.id_to_token(i) for i in ids]  # byte fallback for é


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    path = str(tmp_path / "tok.gguf")
    meta = {
        "tokenizer.ggml.model": (V.STRING, "gpt2"),
        "tokenizer.ggml.pre": (V.STRING, "made-up"),
        "tokenizer.ggml.tokens": ("array", ["a"]),
        "tokenizer.ggml.merges": ("array", []),
    }
    _write(path, "llama", meta, {})
    with pytest.raises(ValueError, match="'made-up' is not a pre-tokenizer"):
        loading.load_tokenizer(path)


def test_gguf_file_without_suffix_is_recognised(tmp_path):
    model = _hf_model("Llama")
    path = _gguf_from_hf(model, "llama", tmp_path / "m.gguf")
    plain = tmp_path / "model.bin.q"
    shutil.copy(path, plain)
    lm = loading.load_pretrained(plain, progress=False)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)
