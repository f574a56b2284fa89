"""Loading a checkpoint straight onto a device mesh, each process reading only its part.

`load_pretrained(path, mesh=..., sharding_rules=...)` comes here. Every
checkpoint tensor becomes a global array through
`jax.make_array_from_callback`, split along one of its dimensions over the
mesh's devices, so each process reads (and dequantizes) only the rows its own
devices hold: about 1/N of the file per process. The family's translation to
saikei parameters (reshapes, fused projections split apart, LayerStack
stacking) then runs as ordinary JAX operations on those global arrays, and at
the end every parameter is laid out by axis name with the rule table. No
process ever holds a whole tensor unless it cannot be split (a tensor no mesh
axis divides, a 1-D GGUF tensor), and then only that tensor.

Safetensors rows are contiguous byte ranges and are read with one `readinto`;
GGUF rows are dequantized block row by block row (llama.cpp's per-head row
interleave of query/key projections is undone per head, so splits fall on head
boundaries).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import mmap
import os
import re
import struct
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from saikei.core import bind_variables, unbind_variables
from saikei.core import named_axes as nx
from saikei.models.transformer import _gguf

# numpy dtypes of safetensors' dtype codes (also used by loading.py).
SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}

Index = tuple[slice, ...]

# Bytes this process has read from checkpoint files through this module (a
# diagnostic: it shows that each process reads only its part).
bytes_read = 0


def _count(nbytes: int) -> None:
    global bytes_read
    bytes_read += int(nbytes)


class _SafetensorsSlices:
    """Reads index ranges of tensors from one or more safetensors files."""

    def __init__(self, files: Mapping[str, Path], stack: contextlib.ExitStack):
        self.where: dict[str, tuple[Any, int, dict[str, Any], Path]] = {}
        opened: dict[Path, tuple[Any, int, dict[str, Any]]] = {}
        for file in dict.fromkeys(files.values()):
            handle = open(file, "rb")  # noqa: SIM115 (closed by the ExitStack)
            stack.callback(handle.close)
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
            opened[file] = (handle, 8 + length, header)
        if "" in files:
            handle, start, header = opened[files[""]]
            self.where = {k: (handle, start, e, files[""]) for k, e in header.items()}
        else:
            for key, file in files.items():
                handle, start, header = opened[file]
                if key in header:
                    self.where[key] = (handle, start, header[key], file)

    def read(self, key: str, index: Index) -> np.ndarray:
        handle, start, entry, file = self.where[key]
        shape = tuple(entry["shape"])
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:  # e.g. float8: let safetensors decode (the whole tensor)
            from safetensors import safe_open

            with safe_open(file, framework="numpy") as f:
                whole = f.get_tensor(key)
            _count(whole.nbytes)
            return np.array(whole[index])
        begin = entry["data_offsets"][0]
        itemsize = np.dtype(dtype).itemsize
        rows = index[0] if index else slice(None)
        r0, r1, _ = rows.indices(shape[0]) if shape else (0, 1, 1)
        rest_full = all(
            s == slice(None) or s.indices(n)[:2] == (0, n) for s, n in zip(index[1:], shape[1:])
        )
        row_bytes = math.prod(shape[1:]) * itemsize
        if rest_full:
            out = _gguf.empty_aligned((r1 - r0, *shape[1:]) if shape else (), dtype)
            handle.seek(start + begin + r0 * row_bytes)
            want = out.nbytes
            if handle.readinto(memoryview(out.reshape(-1).view(np.uint8))) != want:
                raise ValueError(f"{file}: the data of tensor {key!r} is cut short.")
            _count(want)
            return out
        if len(shape) == 2:
            # A column split: one read of the wanted span of each row.
            c0, c1, _ = index[1].indices(shape[1])
            out = _gguf.empty_aligned((r1 - r0, c1 - c0), dtype)
            span = (c1 - c0) * itemsize
            base = start + begin + c0 * itemsize
            flat = out.reshape(-1).view(np.uint8)
            for i, row in enumerate(range(r0, r1)):
                chunk = os.pread(handle.fileno(), span, base + row * row_bytes)
                if len(chunk) != span:
                    raise ValueError(f"{file}: the data of tensor {key!r} is cut short.")
                flat[i * span : (i + 1) * span] = np.frombuffer(chunk, np.uint8)
            _count(out.nbytes)
            return out
        # A split along a later dimension of a higher-rank tensor: through a memory map.
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            count = math.prod(shape)
            view = np.frombuffer(mm, dtype, count, start + begin).reshape(shape)
            out = np.array(view[index])
            del view
        _count(out.nbytes)
        return out


class _GGUFSlices:
    """Reads row ranges of GGUF tensors, dequantized to float32, in Hugging Face layout."""

    def __init__(self, gguf_file: _gguf.GGUFFile, hf_config: Mapping[str, Any]):
        self.file = gguf_file
        self.arch = gguf_file.architecture
        self.names = {_gguf.hf_tensor_name(n, self.arch): n for n in gguf_file.tensors}
        self.config = hf_config

    def heads(self, key: str) -> int | None:
        """The head count whose per-head row interleave `key` carries (llama q/k), if any."""
        if self.arch != "llama":
            return None
        if ".self_attn.q_proj." in key:
            return int(self.config["num_attention_heads"])
        if ".self_attn.k_proj." in key:
            return int(self.config["num_key_value_heads"])
        return None

    def column_unit(self, key: str) -> tuple[int, int]:
        """`(elements, bytes)` of one quantization block along a row of `key`."""
        gguf = _gguf._import_gguf()
        qtype = gguf.GGMLQuantizationType(self.file.tensors[self.names[key]].ggml_type)
        return gguf.constants.GGML_QUANT_SIZES[qtype]

    def read(self, key: str, index: Index) -> np.ndarray:
        gguf = _gguf._import_gguf()
        name = self.names[key]
        info = self.file.tensors[name]
        shape = tuple(info.shape)
        if len(shape) < 2:
            _count(info.nbytes)
            value = self.file.tensor(name)[index]
        else:
            r0, r1, _ = index[0].indices(shape[0])
            per_row = math.prod(shape[1:-1])
            qtype = gguf.GGMLQuantizationType(info.ggml_type)
            rows = math.prod(shape[:-1])
            raw = np.frombuffer(self.file._mm, np.uint8, info.nbytes, info.offset)
            raw = raw.reshape(rows, -1)[r0 * per_row : r1 * per_row]
            stride = raw.shape[1]
            c0, c1 = 0, shape[-1]
            if len(shape) == 2 and len(index) > 1:
                # A split of the columns falls on quantization blocks (`column_unit`).
                c0, c1, _ = index[1].indices(shape[1])
                block, block_bytes = self.column_unit(key)
                raw = raw[:, c0 // block * block_bytes : c1 // block * block_bytes]
                index = (index[0], slice(None))
            _count(raw.size)
            try:
                flat = gguf.quants.dequantize(np.ascontiguousarray(raw), qtype)
            except NotImplementedError as err:
                raise ValueError(
                    f"{self.file.path}: tensor {name!r} is stored as {qtype.name}, which the"
                    f" installed `gguf` package cannot dequantize ({err})."
                ) from None
            self.file._release(info.offset + r0 * per_row * stride, (r1 - r0) * per_row * stride)
            value = flat.reshape(r1 - r0, *shape[1:-1], c1 - c0).astype(np.float32, copy=False)
            heads = self.heads(key)
            if heads is not None:
                value = _gguf._unpermute_rows(value, (r1 - r0) * heads // shape[0])
            value = value[(slice(None), *index[1:])]
        if self.arch in _gguf._GEMMAS and name.endswith("norm.weight"):
            value = value - np.float32(1.0)
        # A copy: unquantized rows may still be views of the file's memory map,
        # which JAX would otherwise adopt without copying.
        return np.array(value, order="C", copy=True)


# Output projections: their second dimension (heads or MLP units) is the one a
# tensor-parallel table splits, even when both dimensions have the hidden size.
_SPLIT_INPUT_SIDE = re.compile(r"(o_proj|down_proj|dense_4h_to_h|attention\.dense)\.weight$")


def _split_order(key: str, shape: tuple[int, ...], hidden: int | None) -> tuple[int, ...]:
    """Dimensions to try splitting, best first.

    Any dimension gives a correct load; choosing the one that the rule table
    will split anyway (heads, MLP units, vocabulary, rather than the hidden
    size) spares a reshuffle between devices after reading.
    """
    dims = tuple(range(min(len(shape), 2)))
    if len(dims) == 2 and _SPLIT_INPUT_SIDE.search(key):
        return (1, 0)
    return tuple(sorted(dims, key=lambda d: shape[d] == hidden))


def _read_spec(
    shape: tuple[int, ...], mesh: Mesh, dims: tuple[int, ...], unit: Callable[[int], int]
) -> PartitionSpec:
    """Splits one dimension of a tensor over as many mesh devices as divide it evenly."""
    names = tuple(mesh.axis_names)
    choices: list[tuple[str, ...]] = [names] if len(names) > 1 else []
    choices += [(n,) for n in sorted(names, key=lambda n: -mesh.shape[n])]
    for dim in dims:
        if dim >= len(shape):
            continue
        for axes in choices:
            parts = math.prod(mesh.shape[a] for a in axes)
            if parts > 1 and shape[dim] % (parts * unit(dim)) == 0:
                return PartitionSpec(*(None,) * dim, axes if len(axes) > 1 else axes[0])
    return PartitionSpec()


def sharded_tensor_getter(
    source: Any,
    hf_config: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    mesh: Mesh,
    stack: contextlib.ExitStack,
) -> Callable[[str], jax.Array]:
    """`get_tensor(name)` returning global arrays of which this process read only its part.

    Args:
      source: An open `_gguf.GGUFFile`, or `{tensor name: safetensors file}`
        (`{"": file}` for a single file).
      hf_config: The checkpoint's config (for GGUF head counts).
      shapes: `{tensor name: shape}`.
      mesh: The mesh the arrays are spread over.
      stack: Closes the files when loading ends.

    Returns:
      The getter, for `_families.model_from_hf_tensors`.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"load_pretrained: mesh must be a jax.sharding.Mesh, got {mesh!r}; build one with"
            " saikei.toolshed.sharding_util.make_global_mesh({'data': 2, 'model': 2})."
        )
    if isinstance(source, _gguf.GGUFFile):
        reader: Any = _GGUFSlices(source, hf_config)
    else:
        reader = _SafetensorsSlices(source, stack)
    hidden = hf_config.get("hidden_size") or hf_config.get("n_embd")

    def get(key: str) -> jax.Array:
        shape = tuple(shapes[key])
        dims = _split_order(key, shape, hidden)
        if isinstance(reader, _GGUFSlices):
            if len(shape) != 2:
                dims = (0,) if len(shape) > 2 else ()
            heads = reader.heads(key)
            # Row splits fall on head boundaries (to undo the per-head row interleave),
            # column splits on quantization blocks.
            units = (shape[0] // heads if heads else 1, reader.column_unit(key)[0])
            spec = _read_spec(shape, mesh, dims, lambda d: units[d])
        else:
            spec = _read_spec(shape, mesh, dims, lambda d: 1)
        sharding = NamedSharding(mesh, spec)
        cache: dict[Any, np.ndarray] = {}

        def callback(index: Index) -> np.ndarray:
            index = tuple(index) + (slice(None),) * (len(shape) - len(index))
            cache_key = tuple(s.indices(n)[:2] for s, n in zip(index, shape))
            if cache_key not in cache:
                cache[cache_key] = reader.read(key, index)
            return cache[cache_key]

        return jax.make_array_from_callback(shape, sharding, callback)

    return get


def _spec_by_name(
    value: nx.NamedArray, rules: Mapping[Hashable, Any], where: str, mesh: Mesh
) -> PartitionSpec:
    shape = value.data_array.shape
    names = (None,) * (len(shape) - len(value.axis_names)) + tuple(value.axis_names)
    entries = []
    owner: dict[str, Hashable] = {}
    for size, name in zip(shape, names):
        target = None if name is None else rules.get(name)
        targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        for t in targets:
            if t not in mesh.axis_names:
                raise ValueError(
                    f"load_pretrained: sharding_rules maps axis {name!r} to mesh axis {t!r}, but"
                    f" the mesh only has axes {tuple(mesh.axis_names)}."
                )
            if t in owner:
                raise ValueError(
                    f"load_pretrained: sharding_rules map both axis {owner[t]!r} and axis"
                    f" {name!r} of {where} to mesh axis {t!r}; one array cannot be split"
                    " along one mesh axis twice. Map one of them elsewhere (or to nothing)."
                )
            owner[t] = name
        parts = math.prod(mesh.shape[t] for t in targets)
        if size % parts:
            raise ValueError(
                f"load_pretrained: cannot shard axis {name!r} (size {size}) of {where} over mesh"
                f" axes {targets} ({parts} devices), which do not divide it. Change"
                " sharding_rules (or the mesh) for that axis."
            )
        entries.append(target)
    return PartitionSpec(*entries)


def place(model: Any, mesh: Mesh, rules: Mapping[Hashable, Any] | None) -> Any:
    """Lays out every parameter by axis name, and replicates the model's other arrays."""
    rules = {n: n for n in mesh.axis_names} if rules is None else dict(rules)
    tree, variables = unbind_variables(model)
    replicated = NamedSharding(mesh, PartitionSpec())

    def put(x: jax.Array, sharding: NamedSharding) -> jax.Array:
        if isinstance(x.sharding, NamedSharding) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        return jax.device_put(x, sharding)

    def lay_out(subtree: Any, where: str) -> Any:
        def go(leaf: Any) -> Any:
            if isinstance(leaf, nx.NamedArray):
                spec = _spec_by_name(leaf, rules, where, mesh)
                return dataclasses.replace(
                    leaf, data_array=put(leaf.data_array, NamedSharding(mesh, spec))
                )
            return put(leaf, replicated) if isinstance(leaf, jax.Array) else leaf

        return jax.tree_util.tree_map(go, subtree, is_leaf=lambda x: isinstance(x, nx.NamedArray))

    for var in variables:
        var.value = lay_out(var.value, f"parameter {var.label!r}")
    return bind_variables(lay_out(tree, "an array of the model"), variables)
