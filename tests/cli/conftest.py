"""Fixtures of the `saikei` command tests: a tiny random Llama saved as a Hugging Face directory.

`transformers` builds and saves the model (config.json + model.safetensors),
`tokenizers` writes a word-level tokenizer.json, so every input the command
reads comes from the libraries users get checkpoints from, not from saikei.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = [
    "<unk>", "<eos>", "the", "cat", "sat", "on", "mat", "dog", "ate", "hat", "a", "big", "red",
    "blue", "small", "ran", "to", "from", "and", "then", "is", "was", "in", "of", "it", "he",
    "she", "they", "we", "you", "I", "see", "saw", "look", "at", "by", "with", "for", "up",
    "down", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "house", "tree", "car", "bird", "fish", "sun", "moon", "star", "sky", "sea", "day", "night",
    "good", "bad",
]  # fmt: skip
CONTEXT = 24
EOS = 1
TINY_CONFIG = dict(
    vocab_size=len(WORDS),
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    max_position_embeddings=CONTEXT,
    eos_token_id=EOS,
)


def tiny_hf_model():
    """The random `transformers` Llama of these tests (float32, eval mode, fixed seed)."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_CONFIG)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith(("q_proj.weight", "lm_head.weight")):
                p.mul_(8.0)  # sharper attention and logits: greedy choices are not near-ties
    return model


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A Hugging Face model directory: config.json, model.safetensors, tokenizer.json."""
    assert len(WORDS) == 64
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_hf_model().save_pretrained(path)
    tok = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>")
    )
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    return path
