"""GGUF files (llama.cpp's format) read as Hugging Face-named checkpoints.

A GGUF file is a little-endian header (magic `GGUF`, version, key/value
metadata, tensor descriptions) followed by aligned tensor data. The header is
parsed here with `struct` over a memory map, because `gguf.GGUFReader` builds a
numpy view per array element and takes seconds on a 262k-token vocabulary;
tensors are dequantized one at a time with `gguf.quants.dequantize` (the `gguf`
package is the only dependency, imported when a file is opened).

`hf_checkpoint` then presents the file the way a Hugging Face checkpoint looks,
so the architecture families (`_families.model_from_hf_tensors`) load it like
any other: a `config.json`-style dict translated from the `{arch}.*` metadata,
HF tensor names, and HF tensor layouts. Two layout facts of llama.cpp's
converter are undone on the way:

- For the `llama` architecture it permutes the rows of each query/key head
  from HF's "first half, second half" RoPE layout to interleaved pairs; the
  inverse is applied here.
- For the Gemma architectures it stores RMS-norm weights as `1 + w`; HF keeps
  `w`, so 1 is subtracted.

The tokenizer stored in the metadata is read by `_gguf_tokenizer.py`.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from saikei.models.transformer.variants import _llamalike_hf

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# Dequantize at most this many bytes of output at a time, so the temporaries of
# `gguf.quants.dequantize` stay small next to the tensor being built.
_CHUNK_BYTES = 4 << 20

_STRING, _ARRAY, _BOOL = 8, 9, 7
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY_DTYPES = {k: np.dtype(v[1:]).newbyteorder("<") for k, v in _SCALAR_FORMATS.items()}
_NUMPY_DTYPES[_BOOL] = np.dtype(np.bool_)


def empty_aligned(shape: tuple[int, ...], dtype: Any, alignment: int = 64) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an `alignment`-byte boundary.

    JAX on CPU adopts such buffers without copying (`jax.dlpack.from_dlpack`),
    which keeps a loaded tensor from existing twice in memory.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer import _gguf
      >>> a = _gguf.empty_aligned((3, 5), np.float32)
      >>> a.shape, a.ctypes.data % 64, a.flags.c_contiguous
      ((3, 5), 0, True)
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as err:
        raise ImportError(
            "Reading GGUF files needs the `gguf` package; install it with"
            " `pip install 'saikei[gguf]'` (or `pip install gguf`)."
        ) from err
    return gguf


@dataclasses.dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in a GGUF file.

    Attributes:
      name: The GGUF tensor name (e.g. `"blk.0.attn_q.weight"`).
      shape: The shape in numpy order (GGUF lists dimensions innermost first;
        this is that list reversed).
      ggml_type: The `gguf.GGMLQuantizationType` number of the data.
      offset: Absolute byte offset of the data in the file.
      nbytes: Size of the data in bytes.

    Example:
      >>> from saikei.models.transformer import _gguf
      >>> _gguf.GGUFTensorInfo("output.weight", (5, 4), 0, 64, 80).shape
      (5, 4)
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int


class _Cursor:
    """Reads little-endian values from a buffer, failing with the file's name at its end."""

    def __init__(self, buffer: Any, path: str):
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0
        self.path = path

    def need(self, nbytes: int, what: str) -> None:
        if self.pos + nbytes > self.size:
            raise ValueError(
                f"{self.path}: the file ends (at byte {self.size}) while reading {what}, which"
                f" needs bytes {self.pos}..{self.pos + nbytes}. The GGUF file is truncated or"
                " corrupt; download or convert it again."
            )

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        length = self.scalar("<Q", what)
        self.need(length, what)
        raw = self.buffer[self.pos : self.pos + length]
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.path}: {what} is not valid UTF-8 ({err}).") from err

    def value(self, vtype: int, what: str) -> Any:
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            return self.array(what)
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise ValueError(
                f"{self.path}: {what} has unknown GGUF value type {vtype}; the file is corrupt"
                " or from a newer GGUF version than saikei reads."
            )
        return self.scalar(fmt, what)

    def array(self, what: str) -> Any:
        etype = self.scalar("<I", what)
        count = self.scalar("<Q", what)
        if etype in _NUMPY_DTYPES:
            dtype = _NUMPY_DTYPES[etype]
            self.need(count * dtype.itemsize, what)
            out = np.frombuffer(self.buffer, dtype, count, self.pos).copy()
            self.pos += count * dtype.itemsize
            return out
        if etype == _STRING:
            return self.strings(count, what)
        return [self.value(etype, f"{what}[{i}]") for i in range(count)]

    def strings(self, count: int, what: str) -> list[str]:
        # The hot loop of the header: vocabularies hold ~10^5 strings.
        buffer, pos, size, unpack = self.buffer, self.pos, self.size, struct.unpack_from
        out = []
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, what)
            (length,) = unpack("<Q", buffer, pos)
            pos += 8
            if pos + length > size:
                self.pos = pos
                self.need(length, what)
            out.append(buffer[pos : pos + length])
            pos += length
        self.pos = pos
        try:
            return [s.decode("utf-8") for s in out]
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{self.path}: a string of {what} is not valid UTF-8 ({err})."
            ) from err


class GGUFFile:
    """An open GGUF file: its metadata, tensor descriptions and (dequantized) tensors.

    Use it as a context manager (or call `close()`); tensors are read from a
    memory map on demand.

    Attributes:
      path: The file's path.
      version: The GGUF format version (2 or 3).
      metadata: The key/value metadata (numeric arrays as numpy arrays,
        string arrays as lists).
      tensors: `{gguf name: GGUFTensorInfo}` in file order.

    Example:
      >>> import os, tempfile, numpy as np, gguf
      >>> from saikei.models.transformer import _gguf
      >>> path = os.path.join(tempfile.mkdtemp(), "tiny.gguf")
      >>> w = gguf.GGUFWriter(path, "llama")
      >>> w.add_tensor("output_norm.weight", np.arange(4, dtype=np.float32))
      >>> for step in (w.write_header_to_file, w.write_kv_data_to_file,
      ...              w.write_tensors_to_file, w.close):
      ...   step()
      >>> with _gguf.GGUFFile(path) as f:
      ...   f.metadata["general.architecture"], f.tensor("output_norm.weight").tolist()
      ('llama', [0.0, 1.0, 2.0, 3.0])
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        gguf = _import_gguf()
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 4:
                raise ValueError(
                    f"{self.path}: the file has {size} bytes, too few for a GGUF header; it is"
                    " truncated or not a GGUF file."
                )
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse(gguf)
        except BaseException:
            self._mm.close()
            raise

    def _parse(self, gguf: Any) -> None:
        cur = _Cursor(self._mm, self.path)
        magic = self._mm[:4]
        if magic != _MAGIC:
            raise ValueError(
                f"{self.path}: not a GGUF file (it starts with {magic!r}, expected {_MAGIC!r})."
            )
        cur.pos = 4
        self.version = cur.scalar("<I", "the version")
        if self.version not in (2, 3):
            hint = (
                " It looks big-endian, which saikei does not read."
                if self.version & 0xFFFF == 0
                else ""
            )
            raise ValueError(
                f"{self.path}: GGUF version {self.version} is not supported (saikei reads"
                f" versions 2 and 3).{hint} Convert the model again with a current llama.cpp."
            )
        n_tensors = cur.scalar("<Q", "the tensor count")
        n_kv = cur.scalar("<Q", "the metadata count")
        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.scalar("<I", f"the type of metadata {key!r}")
            self.metadata[key] = cur.value(vtype, f"metadata {key!r}")
        infos = []
        for i in range(n_tensors):
            name = cur.string(f"the name of tensor #{i}")
            n_dims = cur.scalar("<I", f"the rank of tensor {name!r}")
            dims = [cur.scalar("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims)]
            ggml_type = cur.scalar("<I", f"the type of tensor {name!r}")
            offset = cur.scalar("<Q", f"the offset of tensor {name!r}")
            infos.append((name, dims, ggml_type, offset))
        alignment = int(self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        data_start = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, dims, ggml_type, offset in infos:
            try:
                qtype = gguf.GGMLQuantizationType(ggml_type)
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise ValueError(
                    f"{self.path}: tensor {name!r} has unknown GGML type {ggml_type}; update the"
                    " `gguf` package or re-convert the model."
                ) from None
            count = math.prod(dims)
            if dims and dims[0] % block:
                raise ValueError(
                    f"{self.path}: tensor {name!r} has rows of {dims[0]} values, not a multiple"
                    f" of the {qtype.name} block size {block}; the file is corrupt."
                )
            info = GGUFTensorInfo(
                name,
                tuple(reversed(dims)),
                ggml_type,
                data_start + offset,
                count // block * type_size,
            )
            if info.offset + info.nbytes > len(self._mm):
                raise ValueError(
                    f"{self.path}: the data of tensor {name!r} ends at byte"
                    f" {info.offset + info.nbytes}, but the file has only {len(self._mm)} bytes."
                    " The GGUF file is truncated; download or convert it again."
                )
            self.tensors[name] = info

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Releases the memory map.

        Example:
          >>> import os, tempfile, gguf
          >>> from saikei.models.transformer import _gguf
          >>> path = os.path.join(tempfile.mkdtemp(), "empty.gguf")
          >>> w = gguf.GGUFWriter(path, "llama")
          >>> for step in (w.write_header_to_file, w.write_kv_data_to_file, w.close):
          ...   step()
          >>> f = _gguf.GGUFFile(path)
          >>> f.close()
          >>> f.tensors
          {}
        """
        self._mm.close()

    @property
    def architecture(self) -> str:
        """The `general.architecture` metadata value (e.g. `"llama"`).

        Example:
          >>> import os, tempfile, gguf
          >>> from saikei.models.transformer import _gguf
          >>> path = os.path.join(tempfile.mkdtemp(), "empty.gguf")
          >>> w = gguf.GGUFWriter(path, "gemma3")
          >>> for step in (w.write_header_to_file, w.write_kv_data_to_file, w.close):
          ...   step()
          >>> with _gguf.GGUFFile(path) as f:
          ...   f.architecture
          'gemma3'
        """
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError(f"{self.path}: the metadata has no 'general.architecture' string.")
        return arch

    def tensor(self, name: str) -> np.ndarray:
        """The tensor `name` as a float32 numpy array (dequantized, numpy dimension order).

        Example:
          >>> import os, tempfile, numpy as np, gguf
          >>> from saikei.models.transformer import _gguf
          >>> path = os.path.join(tempfile.mkdtemp(), "t.gguf")
          >>> w = gguf.GGUFWriter(path, "qwen2")
          >>> q8 = gguf.GGMLQuantizationType.Q8_0
          >>> blocks = gguf.quants.quantize(np.ones((2, 32), np.float32), q8)
          >>> w.add_tensor("w", blocks, raw_dtype=q8)
          >>> for step in (w.write_header_to_file, w.write_kv_data_to_file,
          ...              w.write_tensors_to_file, w.close):
          ...   step()
          >>> with _gguf.GGUFFile(path) as f:
          ...   f.tensor("w").shape, round(float(f.tensor("w").sum()), 2)
          ((2, 32), 64.0)
        """
        gguf = _import_gguf()
        info = self.tensors[name]
        qtype = gguf.GGMLQuantizationType(info.ggml_type)
        row_len = info.shape[-1] if info.shape else 1
        rows = math.prod(info.shape[:-1]) if info.shape else 1
        raw = np.frombuffer(self._mm, np.uint8, info.nbytes, info.offset).reshape(rows, -1)
        row_bytes = raw.shape[1]
        out = empty_aligned((rows, row_len), np.float32)
        step = max(1, _CHUNK_BYTES // (4 * max(row_len, 1)))
        try:
            for start in range(0, rows, step):
                chunk = raw[start : start + step]
                out[start : start + step] = gguf.quants.dequantize(chunk, qtype).reshape(
                    -1, row_len
                )
                self._release(info.offset + start * row_bytes, chunk.size)
        except NotImplementedError as err:
            raise ValueError(
                f"{self.path}: tensor {name!r} is stored as {qtype.name}, which the installed"
                f" `gguf` package cannot dequantize ({err})."
            ) from None
        return out.reshape(info.shape)

    def _release(self, offset: int, nbytes: int) -> None:
        # Drop file pages just read from this process's resident set, so reading a
        # file does not add its size to peak memory (they stay in the page cache).
        if nbytes <= 0 or not hasattr(self._mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset - offset % mmap.PAGESIZE
        self._mm.madvise(mmap.MADV_DONTNEED, start, offset + nbytes - start)


# --- The checkpoint as Hugging Face names it ---------------------------------

_MODEL_TYPES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}
_GEMMAS = ("gemma", "gemma2", "gemma3")
# llama.cpp scales Gemma 2/3 queries by 1/sqrt(hidden/heads) for the 27B models
# (recognised by depth) and by 1/sqrt(head_dim) otherwise.
_GEMMA_27B_DEPTH = {"gemma2": 46, "gemma3": 62}

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_norm": "post_attention_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def hf_tensor_name(gguf_name: str, architecture: str) -> str:
    """The Hugging Face name of a GGUF tensor, or the GGUF name itself if it has none.

    Example:
      >>> from saikei.models.transformer import _gguf
      >>> _gguf.hf_tensor_name("blk.3.attn_q.weight", "llama")
      'model.layers.3.self_attn.q_proj.weight'
      >>> _gguf.hf_tensor_name("blk.0.ffn_norm.weight", "gemma3")
      'model.layers.0.pre_feedforward_layernorm.weight'
    """
    stem, dot, suffix = gguf_name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        return gguf_name
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit():
        return gguf_name
    hf = _BLOCK_NAMES.get(parts[2])
    if hf is None:
        return gguf_name
    # Gemma 2/3 have a norm before and after each sublayer; there `ffn_norm` is
    # the one before the feed-forward.
    if parts[2] == "ffn_norm" and architecture in ("gemma2", "gemma3"):
        hf = "pre_feedforward_layernorm"
    return f"model.layers.{parts[1]}.{hf}.{suffix}"


def _single(value: Any, key: str, path: str) -> Any:
    """A metadata value that may be given per layer must be the same for all layers."""
    if isinstance(value, np.ndarray | list):
        values = {v.item() if isinstance(v, np.generic) else v for v in value}
        if len(values) != 1:
            raise ValueError(
                f"{path}: metadata {key!r} differs between layers ({sorted(values)}); saikei"
                " models use one value for every layer."
            )
        return values.pop()
    return value


def hf_config_from_gguf(
    metadata: Mapping[str, Any],
    tensor_shapes: Mapping[str, tuple[int, ...]],
    source: str = "GGUF file",
) -> dict[str, Any]:
    """Translates GGUF metadata into a Hugging Face `config.json` dict.

    Args:
      metadata: The GGUF key/value metadata.
      tensor_shapes: `{gguf tensor name: numpy shape}` (ties and biases are
        read off which tensors exist).
      source: Names the file in error messages.

    Returns:
      A config dict of the matching HF `model_type`.

    Raises:
      ValueError: for an architecture or setting saikei does not load.

    Example:
      >>> from saikei.models.transformer import _gguf
      >>> meta = {"general.architecture": "llama", "llama.block_count": 2,
      ...   "llama.embedding_length": 8, "llama.feed_forward_length": 16,
      ...   "llama.attention.head_count": 2, "llama.attention.layer_norm_rms_epsilon": 1e-5,
      ...   "tokenizer.ggml.tokens": ["a", "b", "c"]}
      >>> cfg = _gguf.hf_config_from_gguf(meta, {"token_embd.weight": (3, 8)})
      >>> cfg["model_type"], cfg["num_key_value_heads"], cfg["tie_word_embeddings"]
      ('llama', 2, True)
    """
    arch = metadata.get("general.architecture")
    if arch not in _MODEL_TYPES:
        raise ValueError(
            f"{source}: GGUF architecture {arch!r} is not supported; saikei reads"
            f" {sorted(_MODEL_TYPES)}."
        )

    def get(key: str, default: Any = ...) -> Any:
        full = f"{arch}.{key}"
        if full not in metadata:
            if default is ...:
                raise ValueError(
                    f"{source}: the metadata lacks {full!r}, which a {arch} model needs; the"
                    " file is incomplete."
                )
            return default
        return _single(metadata[full], full, source)

    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    kv_heads = int(get("attention.head_count_kv", heads))
    head_dim = int(get("attention.key_length", hidden // heads))
    value_dim = int(get("attention.value_length", head_dim))
    if value_dim != head_dim:
        raise ValueError(
            f"{source}: {arch}.attention.value_length={value_dim} differs from key_length="
            f"{head_dim}; saikei needs equal key and value head sizes."
        )
    rope_dims = int(get("rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ValueError(
            f"{source}: {arch}.rope.dimension_count={rope_dims} rotates only part of each"
            f" {head_dim}-wide head; partial rotary embeddings are not supported."
        )
    if "rope_freqs.weight" in tensor_shapes:
        raise ValueError(
            f"{source}: the file stores RoPE frequency factors ('rope_freqs.weight', Llama 3.1"
            " style scaling), which saikei cannot read from GGUF; load the Hugging Face"
            " checkpoint (config.json + safetensors) instead."
        )
    vocab = get("vocab_size", None)
    if vocab is None and "tokenizer.ggml.tokens" in metadata:
        vocab = len(metadata["tokenizer.ggml.tokens"])
    if vocab is None and "token_embd.weight" in tensor_shapes:
        vocab = tensor_shapes["token_embd.weight"][0]
    model_type = _MODEL_TYPES[arch]
    window = get("attention.sliding_window", None)
    if arch == "llama" and window is not None:
        model_type = "mistral"
    cfg: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [_llamalike_hf.ARCHITECTURES[model_type]],
        "vocab_size": int(vocab) if vocab is not None else None,
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(get("rope.freq_base", 10_000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_shapes,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    for hf_key, gguf_key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "padding_token_id"),
    ):
        if f"tokenizer.ggml.{gguf_key}" in metadata:
            cfg[hf_key] = int(metadata[f"tokenizer.ggml.{gguf_key}"])
    scaling = get("rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif scaling != "none":
        raise ValueError(
            f"{source}: {arch}.rope.scaling.type={scaling!r} is not supported (saikei reads"
            " 'none' and 'linear' from GGUF)."
        )
    if model_type == "mistral":
        cfg["sliding_window"] = int(window)
    if model_type == "qwen2":
        cfg["use_sliding_window"] = False
    if arch in _GEMMAS:
        cfg["hidden_act"] = cfg["hidden_activation"] = "gelu_pytorch_tanh"
        cfg["tie_word_embeddings"] = True
    if arch in ("gemma2", "gemma3"):
        layers = cfg["num_hidden_layers"]
        if _GEMMA_27B_DEPTH[arch] == layers:
            cfg["query_pre_attn_scalar"] = hidden // heads
        else:
            cfg["query_pre_attn_scalar"] = head_dim
        cfg["sliding_window"] = int(window if window is not None else 4096)
        period = 2 if arch == "gemma2" else 6
        cfg["layer_types"] = [
            "full_attention" if (i + 1) % period == 0 else "sliding_attention"
            for i in range(layers)
        ]
    if arch == "gemma2":
        cfg["attn_logit_softcapping"] = float(get("attn_logit_softcapping", 50.0))
        cfg["final_logit_softcapping"] = float(get("final_logit_softcapping", 30.0))
    if arch == "gemma3":
        # llama.cpp gives Gemma 3's sliding-window layers this fixed RoPE base.
        cfg["rope_local_base_freq"] = 10_000.0
        cfg["attn_logit_softcapping"] = None
        cfg["final_logit_softcapping"] = None
    return cfg


def _unpermute_rows(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's per-head row interleave of query/key projections.

    llama.cpp orders each head's rows as (pair index, half), HF as (half, pair
    index); the data is the same otherwise.
    """
    half = weights.shape[0] // heads // 2
    out = empty_aligned(weights.shape, weights.dtype)
    grouped = weights.reshape(heads, half, 2, *weights.shape[1:])
    out.reshape(heads, 2, half, *weights.shape[1:])[...] = grouped.swapaxes(1, 2)
    return out


def hf_checkpoint(
    gguf_file: GGUFFile,
) -> tuple[dict[str, Any], dict[str, tuple[int, ...]], Callable[[str], np.ndarray]]:
    """Presents a GGUF file as `(config dict, {hf name: shape}, get_tensor(hf name))`.

    The three are what `_families.model_from_hf_tensors` takes. Tensors come out
    as float32 numpy arrays in HF layout (see the module docstring for the
    fix-ups); tensors with no HF name keep their GGUF name, so the family
    reports them as extra.

    Example:
      >>> import os, tempfile, numpy as np, gguf
      >>> from saikei.models.transformer import _gguf
      >>> path = os.path.join(tempfile.mkdtemp(), "t.gguf")
      >>> w = gguf.GGUFWriter(path, "llama")
      >>> for key, value in {"block_count": 1, "embedding_length": 4, "feed_forward_length": 8,
      ...     "attention.head_count": 1}.items():
      ...   w.add_uint32(f"llama.{key}", value)
      >>> w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
      >>> w.add_tensor("token_embd.weight", np.zeros((6, 4), np.float32))
      >>> w.add_tensor("blk.0.attn_q.weight", np.arange(16, dtype=np.float32).reshape(4, 4))
      >>> for step in (w.write_header_to_file, w.write_kv_data_to_file,
      ...              w.write_tensors_to_file, w.close):
      ...   step()
      >>> with _gguf.GGUFFile(path) as f:
      ...   config, shapes, get_tensor = _gguf.hf_checkpoint(f)
      ...   config["vocab_size"], shapes["model.layers.0.self_attn.q_proj.weight"]
      ...   get_tensor("model.layers.0.self_attn.q_proj.weight")[:, 0].tolist()  # un-permuted rows
      (6, (4, 4))
      [0.0, 8.0, 4.0, 12.0]
    """
    arch = gguf_file.architecture
    gguf_shapes = {name: info.shape for name, info in gguf_file.tensors.items()}
    config = hf_config_from_gguf(gguf_file.metadata, gguf_shapes, gguf_file.path)
    gguf_names: dict[str, str] = {}
    for name in gguf_file.tensors:
        hf = hf_tensor_name(name, arch)
        if hf in gguf_names:
            raise ValueError(
                f"{gguf_file.path}: tensors {gguf_names[hf]!r} and {name!r} both map to {hf!r}."
            )
        gguf_names[hf] = name
    shapes = {hf: gguf_shapes[name] for hf, name in gguf_names.items()}

    def get_tensor(hf_name: str) -> np.ndarray:
        name = gguf_names[hf_name]
        value = gguf_file.tensor(name)
        if arch == "llama":
            if ".self_attn.q_proj." in hf_name:
                value = _unpermute_rows(value, config["num_attention_heads"])
            elif ".self_attn.k_proj." in hf_name:
                value = _unpermute_rows(value, config["num_key_value_heads"])
        if arch in _GEMMAS and name.endswith("norm.weight"):
            value -= 1.0
        return value

    return config, shapes, get_tensor
