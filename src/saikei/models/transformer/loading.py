"""Loading pretrained transformers from disk, and saving them back, without torch.

- `load_pretrained(path)` reads a Hugging Face model directory (`config.json`
  plus `model.safetensors`, or a sharded `model.safetensors.index.json` and its
  shards) or a llama.cpp `.gguf` file into a saikei `TransformerLM`.
- `save_pretrained(model, path)` writes `config.json` + `model.safetensors`
  that `transformers` and `load_pretrained` both read.
- `load_tokenizer(path)` returns a `tokenizers.Tokenizer` for a model directory
  or a GGUF file.

Tensors are read one at a time and become the model's parameters directly, so
loading needs little more memory than the model itself: safetensors files are
checked and listed by `safetensors.safe_open`, then each tensor's bytes are
read into a 64-byte-aligned buffer that JAX (on CPU) adopts without copying;
GGUF tensors are dequantized in small chunks from a memory map into such
buffers (see `_gguf`). Nothing here ever unpickles: PyTorch `.bin`/`.pt`
checkpoints are refused with an explanation.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.models.transformer import (
    _families,
    _gguf,
    _gguf_tokenizer,
    _hook_points,
    _sharded_loading,
    model_parts,
)

_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_GGUF_MAGIC = b"GGUF"


# --- Progress ------------------------------------------------------------------


class _Counter:
    """A minimal stderr progress counter for when tqdm is not installed."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.shown = total, desc, 0, -1

    def update(self, n: int = 1) -> None:
        self.n += n
        percent = 100 * self.n // max(self.total, 1)
        if percent // 5 != self.shown // 5 or self.n == self.total:
            self.shown = percent
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} tensors ({percent}%)")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    try:
        from tqdm.auto import tqdm

        bar: Any = tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr, leave=False)
    except ImportError:
        bar = _Counter(total, desc)
    try:
        yield bar.update
    finally:
        bar.close()


# --- Reading -------------------------------------------------------------------


def _param_dtype(dtype: Any) -> Any:
    if dtype is None:
        return jnp.dtype(jnp.float32)
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not jnp.issubdtype(resolved, jnp.floating):
        raise ValueError(
            f"load_pretrained: dtype={dtype!r} is not a floating-point dtype; use None"
            " (float32), 'bfloat16', 'float16' or 'float32'."
        )
    return resolved


def _is_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as f:
        return f.read(4) == _GGUF_MAGIC


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: {what} is not valid JSON ({err}).") from None


def _safe_open(path: Path) -> Any:
    from safetensors import safe_open

    try:
        return safe_open(path, framework="numpy")
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError)
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(
        f"{path}: not a readable safetensors file ({type(err).__name__}: {err}). It is probably"
        " truncated or corrupt; download or save it again."
    )


def _weight_files(directory: Path) -> dict[str, Path]:
    """`{tensor name: file}` for a model directory, checking every file exists."""
    single, index = directory / _WEIGHTS, directory / _INDEX
    if single.is_file():
        return {"": single}
    if index.is_file():
        weight_map = _read_json(index, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(
                f"{index}: has no 'weight_map' of tensor names to shard files; the index is"
                " corrupt."
            )
        files = {name: directory / shard for name, shard in weight_map.items()}
        missing = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if missing:
            raise FileNotFoundError(
                f"{index} lists shard(s) {missing} that are not in {directory}; download the"
                " missing shards or re-save the model."
            )
        return files
    present = sorted(p.name for p in directory.iterdir())
    pickled = [name for name in present if name.endswith(_PICKLE_SUFFIXES)]
    if pickled:
        raise ValueError(
            f"{directory}: holds only pickled PyTorch weights ({pickled}). saikei reads"
            " safetensors and GGUF files and never unpickles (unpickling can run arbitrary"
            " code). Convert the checkpoint once, in an environment you trust, e.g."
            " `transformers.AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out)`"
            " (which writes model.safetensors)."
        )
    ggufs = [name for name in present if name.endswith(".gguf")]
    hint = f" To load a GGUF file, pass its path: {directory / ggufs[0]}." if ggufs else ""
    raise FileNotFoundError(f"{directory}: no {_WEIGHTS} or {_INDEX} (found {present}).{hint}")


_SAFETENSORS_DTYPES = _sharded_loading.SAFETENSORS_DTYPES


class _SafetensorsFile:
    """One safetensors file: `safe_open` validates and lists it; tensors are read on demand.

    Tensor bytes go straight from the file into 64-byte-aligned buffers, which
    JAX adopts without a copy, so a tensor never exists twice in memory.
    """

    def __init__(self, path: Path):
        self.path = path
        with _safe_open(path) as handle:  # checks the header against the file's size
            keys = list(handle.keys())
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close(), via an ExitStack)
        (length,) = struct.unpack("<Q", self.file.read(8))
        header = json.loads(self.file.read(length))
        self.data_start = 8 + length
        self.entries = {key: header[key] for key in keys}

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.entries[key]["shape"])

    def get(self, key: str) -> np.ndarray:
        entry = self.entries[key]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:  # e.g. float8: let safetensors decode it
            with _safe_open(self.path) as handle:
                return handle.get_tensor(key)
        begin, end = entry["data_offsets"]
        out = _gguf.empty_aligned(self.shape(key), dtype)
        self.file.seek(self.data_start + begin)
        if self.file.readinto(memoryview(out.reshape(-1).view(np.uint8))) != end - begin:
            raise _unreadable(self.path, EOFError(f"the data of tensor {key!r} is cut short"))
        return out

    def close(self) -> None:
        self.file.close()


def _safetensors_checkpoint(
    directory: Path, stack: contextlib.ExitStack
) -> tuple[dict[str, tuple[int, ...]], Callable[[str], np.ndarray]]:
    files = _weight_files(directory)
    opened: dict[Path, _SafetensorsFile] = {}
    for file in dict.fromkeys(files.values()):
        opened[file] = _SafetensorsFile(file)
        stack.callback(opened[file].close)
    where: dict[str, _SafetensorsFile] = {}
    if "" in files:
        where = dict.fromkeys(opened[files[""]].entries, opened[files[""]])
    else:
        for key, file in files.items():
            if key not in opened[file].entries:
                raise ValueError(
                    f"{directory / _INDEX} says tensor {key!r} is in {file.name}, but that shard"
                    " does not hold it; the index and shards do not belong together."
                )
            where[key] = opened[file]
    shapes = {key: source.shape(key) for key, source in where.items()}
    return shapes, lambda key: where[key].get(key)


def _adopt(value: Any) -> Any:
    """Hands a host numpy array to JAX, without a copy where JAX can share the buffer."""
    if isinstance(value, np.ndarray) and jax.default_backend() == "cpu":
        try:
            return jax.dlpack.from_dlpack(value)
        except (BufferError, TypeError, ValueError, RuntimeError):
            pass  # e.g. bfloat16, which numpy cannot export; jnp.asarray copies it
    return value


def load_pretrained(
    path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    activation_dtype: Any = None,
    use_layer_stack: bool = True,
    progress: bool = True,
    name: str = "transformer",
    hook_points: bool = False,
    mesh: Any = None,
    sharding_rules: Any = None,
) -> model_parts.TransformerLM:
    """Loads a pretrained causal language model from a Hugging Face directory or a GGUF file.

    Args:
      path: A directory with `config.json` and `model.safetensors` (or a
        sharded `model.safetensors.index.json` with its shards), or a `.gguf`
        file (any quantization the `gguf` package dequantizes; weights are
        dequantized to `dtype`).
      dtype: Parameter and activation dtype: None (float32), `"bfloat16"`,
        `jnp.bfloat16`, ...
      activation_dtype: Dtype of the activations; None means `dtype`. E.g.
        `dtype="bfloat16", activation_dtype="float32"` keeps bfloat16 weights
        but computes (and lets you inspect) activations in float32.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack` (the
        default): one block's computation runs over weights stacked along a
        `blocks` axis, so compile time stays flat in depth and decoding reads
        each weight in place. `False` gives a `Sequential` of separate blocks
        (penzai's default), e.g. to edit one block's structure.
      progress: Show a progress bar on stderr (tqdm if installed, else a
        counter).
      name: Prefix of the parameter labels.
      hook_points: Insert the standard named hook points (see
        `saikei.interp.with_hook_points`) for caching and interventions.
      mesh: A `jax.sharding.Mesh` (possibly spanning several processes) to
        load onto. Each process then reads only the slices of each tensor its
        own devices hold, and every parameter comes out as a global array laid
        out by `sharding_rules`. Every process must make the same call.
      sharding_rules: With `mesh`, maps axis names to mesh axes (e.g.
        `saikei.toolshed.sharding_util.tensor_parallel_rules()`); None maps
        each mesh axis name to the array axis of the same name.

    Returns:
      The model with its weights bound.

    Raises:
      FileNotFoundError: the path, `config.json`, the weights or a shard is missing.
      ValueError: an unsupported architecture or config value, a tensor that
        is missing, extra or misshapen (named, with both shapes), a corrupt or
        truncated file, or a directory with only pickled weights.

    Example:
      >>> import tempfile, jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import loading
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> path = tempfile.mkdtemp()
      >>> loading.save_pretrained(lm, path, overwrite=True)
      >>> again = loading.load_pretrained(path, progress=False)
      >>> again(sk.nx.wrap(jax.numpy.arange(3), "seq")).named_shape
      {'seq': 3, 'vocabulary': 11}
    """
    path = Path(path)
    param_dtype = _param_dtype(dtype)
    if not path.exists():
        raise FileNotFoundError(f"load_pretrained: {path} does not exist.")
    with contextlib.ExitStack() as stack:
        if path.is_file():
            if not _is_gguf(path):
                raise ValueError(
                    f"load_pretrained: {path} is a file but not a GGUF file; pass a GGUF file"
                    f" or a model directory (with {_CONFIG} and {_WEIGHTS})."
                )
            gguf_file = stack.enter_context(_gguf.GGUFFile(path))
            hf_config, shapes, get_tensor = _gguf.hf_checkpoint(gguf_file)
        else:
            config_path = path / _CONFIG
            if not config_path.is_file():
                raise FileNotFoundError(
                    f"load_pretrained: {path} has no {_CONFIG}; a Hugging Face model directory"
                    " needs one beside its weights (or pass a .gguf file)."
                )
            hf_config = _read_json(config_path, _CONFIG)
            shapes, get_tensor = _safetensors_checkpoint(path, stack)
        if mesh is not None:
            source = gguf_file if path.is_file() else _weight_files(path)
            get_tensor = _sharded_loading.sharded_tensor_getter(
                source, hf_config, shapes, mesh, stack
            )
        with _progress(len(shapes), f"Loading {path.name}", progress) as tick:

            def read(key: str) -> Any:
                value = _adopt(get_tensor(key))
                tick()
                return value

            try:
                model = _families.model_from_hf_tensors(
                    hf_config,
                    read,
                    shapes,
                    dtype=param_dtype,
                    activation_dtype=None
                    if activation_dtype is None
                    else _param_dtype(activation_dtype),
                    use_layer_stack=use_layer_stack,
                    name=name,
                    source=str(path),
                )
                if mesh is not None:
                    model = _sharded_loading.place(model, mesh, sharding_rules)
                return _hook_points.with_hook_points(model) if hook_points else model
            except KeyError as err:
                raise ValueError(
                    f"{path}: the config lacks the field {err.args[0]!r}, which a"
                    f" {hf_config.get('model_type')} model needs."
                ) from None
            except ValueError as err:
                if str(path) in str(err):
                    raise
                raise ValueError(f"{path}: {err}") from None


# --- Writing -------------------------------------------------------------------


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def save_pretrained(
    model: model_parts.TransformerLM, path: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Writes `config.json` and `model.safetensors` in the Hugging Face layout.

    `transformers.AutoModelForCausalLM.from_pretrained(path)` and
    `load_pretrained(path)` both read the result. Tensors keep the model's
    parameter dtype (the config records it); tied embeddings are written once.

    Args:
      model: A `TransformerLM` built by a saikei builder or loader (its
        metadata records the architecture).
      path: The directory to write; created if missing.
      overwrite: Allow writing into a directory that is not empty. The two
        files are replaced, and a sharded index (with its shards) that would
        shadow the new weights is removed; other files are left alone.

    Raises:
      FileExistsError: `path` is a non-empty directory and `overwrite` is False.

    Example:
      >>> import os, tempfile, jax
      >>> from saikei.models.transformer import loading
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> path = os.path.join(tempfile.mkdtemp(), "tiny")
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> loading.save_pretrained(lm, path)
      >>> sorted(os.listdir(path))
      ['config.json', 'model.safetensors']
    """
    from safetensors.numpy import save_file

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"save_pretrained: {path} exists and is not a directory.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"save_pretrained: {path} is not empty; pass overwrite=True to replace its"
            f" {_CONFIG} and {_WEIGHTS}, or choose an empty directory."
        )
    hf_config, tensors = _families.hf_tensors_from_model(model)
    dtypes = {np.dtype(t.dtype).name for t in tensors.values()}
    if len(dtypes) > 1:
        raise ValueError(
            f"save_pretrained: the model's parameters mix dtypes {sorted(dtypes)}; cast them to"
            " one dtype first."
        )
    hf_config["torch_dtype"] = dtypes.pop() if dtypes else "float32"
    path.mkdir(parents=True, exist_ok=True)
    index = path / _INDEX
    if index.is_file():
        weight_map = _read_json(index, "the shard index").get("weight_map") or {}
        for shard in set(weight_map.values()):
            (path / shard).unlink(missing_ok=True)
        index.unlink()
    arrays = {key: np.ascontiguousarray(value) for key, value in tensors.items()}
    _write_atomically(
        path / _WEIGHTS, lambda p: save_file(arrays, str(p), metadata={"format": "pt"})
    )
    _write_atomically(
        path / _CONFIG, lambda p: p.write_text(json.dumps(hf_config, indent=2) + "\n")
    )


# --- Tokenizers ----------------------------------------------------------------


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Returns a `tokenizers.Tokenizer` for a model directory or a GGUF file.

    A directory is read from its `tokenizer.json` (the `tokenizers` format
    every Hugging Face fast tokenizer ships). For a GGUF file the tokenizer is
    rebuilt from the `tokenizer.ggml.*` metadata: byte-level BPE (`gpt2`, e.g.
    SmolLM2, Llama 3, Qwen) or SentencePiece BPE (`llama`, e.g. Gemma, Llama 2),
    with control tokens as special tokens and BOS/EOS added as the file says.
    This needs neither torch nor transformers.

    Args:
      path: A model directory, a `tokenizer.json` file or a `.gguf` file.

    Returns:
      A `tokenizers.Tokenizer`: `tok.encode(text).ids`, `tok.decode(ids)`.

    Example:
      >>> import os, tempfile, tokenizers
      >>> from saikei.models.transformer import loading
      >>> tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"hi": 0, "[UNK]": 1}, "[UNK]"))
      >>> tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
      >>> path = tempfile.mkdtemp()
      >>> tok.save(os.path.join(path, "tokenizer.json"))
      >>> loading.load_tokenizer(path).encode("hi there").ids
      [0, 1]
    """
    import tokenizers

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_tokenizer: {path} does not exist.")
    if path.is_file() and _is_gguf(path):
        with _gguf.GGUFFile(path) as gguf_file:
            return _gguf_tokenizer.tokenizer_from_gguf(gguf_file.metadata, str(path))
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        present = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(
            f"load_tokenizer: {path} has no tokenizer.json (found {present}). saikei reads the"
            " `tokenizers` format; a SentencePiece-only model (tokenizer.model) can be converted"
            " once with `transformers.AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`."
        )
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:
        raise ValueError(f"{file}: not a readable tokenizer.json ({err}).") from None
