"""What the transformer tests share: tiny random `transformers` models, tokens, logits.

Test modules import it as `from tests.models._hf_helpers import ...`; pytest's
importlib mode (see pyproject.toml) makes `tests.models` importable from the
rootdir, whichever test file or directory a run names.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Sizes of a `transformers` config small enough that every test runs in a moment.
TINY_SIZES = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
)
TINY_LLAMA = dict(TINY_SIZES, rms_norm_eps=1e-5)


def norms_and_biases(name: str) -> bool:
    """True for the parameters of norms (llama-like, GPT-NeoX, GPT-2 names) and for biases.

    Example:
      >>> from tests.models._hf_helpers import norms_and_biases
      >>> [norms_and_biases(n) for n in ("h.0.ln_1.weight", "mlp.c_fc.bias", "mlp.c_fc.weight")]
      [True, True, False]
    """
    return "norm" in name or ".ln_" in name or name.endswith("bias")


def random_hf_model(
    config_class: str,
    model_class: str,
    config: Mapping[str, Any],
    *,
    perturb: Callable[[str], bool] | None = norms_and_biases,
    sharpen: Mapping[str, float] | None = None,
):
    """`transformers.{model_class}(transformers.{config_class}(**config))`, float32, eval mode.

    The init is random with a fixed seed. Parameters that `perturb` selects
    get `0.1 * N(0, 1)` added, so that norms and biases are not 1 or 0 and a
    wrong mapping shows up; parameters whose names end in a key of `sharpen`
    are multiplied by its value (sharper attention or logits than the tiny
    init gives, so positions matter and greedy choices are not near-ties).
    """
    torch.manual_seed(0)
    hf_config = getattr(transformers, config_class)(**config)
    model = getattr(transformers, model_class)(hf_config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if perturb is not None and perturb(name):
                p.add_(0.1 * torch.randn_like(p))
            for suffix, factor in (sharpen or {}).items():
                if name.endswith(suffix):
                    p.mul_(factor)
    return model


def hf_state(model) -> dict[str, np.ndarray]:
    """The model's tensors as `save_pretrained` writes them: a tied `lm_head` is not stored."""
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]
    return state


def random_tokens(seq: int = 12, batch: int = 2) -> np.ndarray:
    """Token ids in `[0, 64)` of shape `(batch, seq)`, the same on every call.

    Example:
      >>> from tests.models._hf_helpers import random_tokens
      >>> random_tokens(seq=3, batch=1).shape
      (1, 3)
    """
    return np.random.default_rng(0).integers(0, 64, size=(batch, seq))


def named_tokens(tokens: np.ndarray) -> sk.nx.NamedArray:
    """`(batch, seq)` ids as a NamedArray with axes `batch` and `seq`.

    Example:
      >>> import numpy as np
      >>> from tests.models._hf_helpers import named_tokens
      >>> named_tokens(np.zeros((2, 3), np.int32)).named_shape
      {'batch': 2, 'seq': 3}
    """
    return sk.nx.wrap(jnp.asarray(tokens), "batch", "seq")


def left_padded(tokens: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """`tokens` with `pad` pad ids (0) in front of each row, and the positions (-1 for padding).

    Example:
      >>> import numpy as np
      >>> from tests.models._hf_helpers import left_padded
      >>> padded, positions = left_padded(np.array([[5, 6]]), 2)
      >>> padded.tolist(), positions.tolist()
      ([[0, 0, 5, 6]], [[-1, -1, 0, 1]])
    """
    batch, seq = tokens.shape
    padded = np.concatenate([np.zeros((batch, pad), dtype=tokens.dtype), tokens], axis=1)
    positions = np.concatenate(
        [-np.ones((batch, pad), dtype=np.int32), np.tile(np.arange(seq), (batch, 1))], axis=1
    )
    return padded, positions


def our_logits(lm, tokens: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    """A saikei model's float32 logits `(batch, seq, vocabulary)` for `(batch, seq)` ids."""
    kwargs = {}
    if positions is not None:
        kwargs["token_positions"] = named_tokens(positions)
    out = lm(named_tokens(tokens), **kwargs)
    return np.asarray(out.astype(jnp.float32).unwrap("batch", "seq", "vocabulary"))


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    """A `transformers` model's float32 logits `(batch, seq, vocabulary)` for `(batch, seq)` ids."""
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


def slot_labels(lm) -> set[str]:
    """The labels of a model's parameter slots (a builder's output with `init_base_rng=None`)."""
    return {s.label for s in sk.select(lm).at_instances_of(sk.ParameterSlot).get_sequence()}
