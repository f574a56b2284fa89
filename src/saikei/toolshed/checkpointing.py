"""Saving and restoring a model's variables (parameters and state) by label.

Format: a single `safetensors` file. Each array leaf of each variable's value is
one tensor; a JSON document in the file's metadata (key `"saikei"`) records, for
each variable, its label, whether it is a parameter or a state variable, its
metadata (when JSON-serializable) and the structure of its value: dicts, lists,
tuples, Python scalars, `sk.nx.NamedArray` (with its axis names), JAX PRNG keys and
arrays with their dtype and shape. Dtypes that safetensors cannot store natively
(e.g. bfloat16) are stored as same-width unsigned integers and viewed back, so
every value round-trips bit for bit. Loading never unpickles: only tensors and
JSON are read.

safetensors was chosen over orbax-checkpoint because a checkpoint here is a flat
mapping from labels to arrays, which safetensors stores in one file, synchronously,
and readable by other tools; orbax's directory layout and asynchronous machinery
buy nothing for it.

Variables are matched by label, so a checkpoint can be restored into any model
whose variables have the same labels, kinds, value structures, shapes and dtypes,
regardless of where they sit in the tree. Labels must be stable across processes:
strings (the usual case), `sk.ScopedStateVarLabel`, or tuples of those; automatic
`AutoStateVarLabel` labels are rejected.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from saikei.core._tree_util import pretty_keystr
from saikei.core._variables import (
    AbstractVariableSlot,
    AutoStateVarLabel,
    Parameter,
    ParameterSlot,
    ScopedStateVarLabel,
    StateVariable,
    StateVariableSlot,
    bind_variables,
    unbind_variables,
)
from saikei.core.named_axes import NamedArray

_FORMAT = "saikei.checkpointing/1"
_METADATA_KEY = "saikei"
_NATIVE_DTYPES = frozenset(
    np.dtype(d)
    for d in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
)


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint's variables do not match the model they are restored into.

    Example:
      >>> from saikei.toolshed import checkpointing
      >>> issubclass(checkpointing.CheckpointMismatchError, ValueError)
      True
    """


# Labels ----------------------------------------------------------------------------


def _label_key(label: Any) -> str:
    """A string naming `label` that is the same in every process."""
    if isinstance(label, str):
        return label
    return "<" + json.dumps(_encode_label(label)) + ">"


def _encode_label(label: Any) -> Any:
    if isinstance(label, str):
        return label
    if isinstance(label, ScopedStateVarLabel):
        return {"scoped": [_encode_label(label.group), label.index]}
    if isinstance(label, bool | int | float) or label is None:
        return {"py": label}
    if isinstance(label, tuple):
        return {"tuple": [_encode_label(x) for x in label]}
    if isinstance(label, AutoStateVarLabel):
        raise ValueError(
            f"Cannot checkpoint a variable with the automatic label {label!r}: automatic"
            " labels depend on object ids and differ between processes. Give the"
            " variable an explicit label, or create it inside"
            " sk.scoped_auto_state_var_labels()."
        )
    raise ValueError(
        f"Cannot checkpoint a variable labeled {label!r} (type {type(label).__name__}):"
        " labels must be strings, ScopedStateVarLabel, numbers or tuples of those."
    )


def _decode_label(encoded: Any) -> Any:
    if isinstance(encoded, str):
        return encoded
    if "scoped" in encoded:
        group, index = encoded["scoped"]
        return ScopedStateVarLabel(group=_decode_label(group), index=index)
    if "py" in encoded:
        return encoded["py"]
    return tuple(_decode_label(x) for x in encoded["tuple"])


def _json_metadata(metadata: dict[Any, Any]) -> Any:
    try:
        text = json.dumps(metadata, allow_nan=True)
    except (TypeError, ValueError):
        return None
    return metadata if json.loads(text) == metadata else None


# Values ----------------------------------------------------------------------------


def _encode_value(value: Any, where: str, tensors: Any) -> Any:
    """Describes `value` as JSON; hands its arrays to `tensors` (if given), which names them.

    `tensors` is None (describe only), a dict (arrays are stored in it as numpy
    under fresh keys) or a callable `sink(array) -> key`.
    """
    if isinstance(value, NamedArray):
        return {
            "t": "named",
            "names": list(value.axis_names),
            "data": _encode_value(value.data_array, where, tensors),
        }
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            return {
                "t": "key",
                "impl": str(jax.random.key_impl(value)),
                "data": _encode_value(jax.random.key_data(value), where, tensors),
            }
        if isinstance(value, jax.core.Tracer):
            raise ValueError(
                f"Cannot checkpoint the traced value at {where}: save outside of jit/grad."
            )
        dtype = np.dtype(value.dtype)
        entry: dict[str, Any] = {
            "t": "array",
            "jax": isinstance(value, jax.Array),
            "dtype": dtype.name,
            "shape": list(np.shape(value)),
        }
        if isinstance(value, jax.Array) and value.weak_type:
            entry["weak"] = True
        if callable(tensors):
            entry["key"] = tensors(value)
        elif tensors is not None:
            key = str(len(tensors))
            tensors[key] = _storable(np.asarray(value))
            entry["key"] = key
        return entry
    if value is None or isinstance(value, bool | int | float | str):
        return {"t": "py", "v": value}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(
                f"Cannot checkpoint the dict at {where}: only string keys are supported,"
                f" got {list(value)!r}."
            )
        return {
            "t": "dict",
            "items": [[k, _encode_value(v, f"{where}[{k!r}]", tensors)] for k, v in value.items()],
        }
    if isinstance(value, list | tuple):
        return {
            "t": type(value).__name__,
            "items": [_encode_value(v, f"{where}[{i}]", tensors) for i, v in enumerate(value)],
        }
    raise ValueError(
        f"Cannot checkpoint the value at {where} of type {type(value).__name__}: supported"
        " are arrays, NamedArray, PRNG keys, Python scalars, strings, None, and dicts"
        " (string keys), lists and tuples of those."
    )


def _storable(array: np.ndarray) -> np.ndarray:
    """The array as safetensors can hold it (non-native dtypes viewed as unsigned ints)."""
    if array.dtype not in _NATIVE_DTYPES:
        array = array.view(f"uint{array.dtype.itemsize * 8}")
    return np.ascontiguousarray(array)


class _FileSource:
    """The tensors of a single-file checkpoint, whole or by region."""

    def __init__(self, handle: Any):
        self.handle = handle

    def read(self, key: str, index: tuple[slice, ...] | None) -> np.ndarray:
        if not index:
            return self.handle.get_tensor(key)
        return self.handle.get_slice(key)[index]


class _ChunkSource:
    """The tensors of a sharded checkpoint: regions are assembled from the chunk files."""

    def __init__(self, path: str, shard_names: list[str]):
        directory = os.path.dirname(os.path.abspath(path))
        self.chunks: dict[str, list[tuple[Any, str, list[list[int]]]]] = {}
        for name in shard_names:
            file = os.path.join(directory, name)
            if not os.path.isfile(file):
                raise FileNotFoundError(
                    f"{path!r} is a sharded checkpoint whose chunk file {name!r} is missing from"
                    f" {directory}; all chunk files must sit beside the index file."
                )
            handle = safe_open(file, framework="numpy")
            for key, tensor, box in json.loads(handle.metadata()[_CHUNKS_KEY]):
                self.chunks.setdefault(key, []).append((handle, tensor, box))

    def read(self, key: str, index: tuple[slice, ...] | None) -> np.ndarray:
        parts = self.chunks.get(key, [])
        if not parts:
            raise ValueError(f"the sharded checkpoint holds no data for tensor {key}.")
        shape = [hi for _, hi in parts[0][2]]
        for _, _, box in parts:
            shape = [max(a, hi) for a, (_, hi) in zip(shape, box)]
        want = [s.indices(n)[:2] for s, n in zip(index or (), shape)] or [(0, n) for n in shape]
        out: np.ndarray | None = None
        covered = 0
        for handle, tensor, box in parts:
            lo = [max(a, b) for (a, _), (b, _) in zip(want, box)]
            hi = [min(a, b) for (_, a), (_, b) in zip(want, box)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            src = tuple(slice(a - b0, c - b0) for a, c, (b0, _) in zip(lo, hi, box))
            piece = handle.get_slice(tensor)[src] if src else handle.get_tensor(tensor)
            if out is None:
                out = np.empty([h - low for low, h in want], piece.dtype)
            dst = tuple(slice(a - w0, c - w0) for a, c, (w0, _) in zip(lo, hi, want))
            out[dst] = piece
            covered += int(np.prod([c - a for a, c in zip(lo, hi)]))
        if out is None or covered < int(np.prod([h - low for low, h in want])):
            raise ValueError(
                f"the sharded checkpoint's chunk files do not cover tensor {key} (region"
                f" {want}); a chunk file is missing or from another save."
            )
        return out


def _target_sharding(like: Any, names: Any, placement: Any, ndim: int) -> Any:
    """Where a restored array goes: beside the value it replaces, or by name on a mesh."""
    spread = isinstance(like, jax.Array) and not isinstance(like, jax.core.Tracer)
    if spread and (not like.is_fully_addressable or len(like.sharding.device_set) > 1):
        return like.sharding
    if placement is None:
        return None
    from jax.sharding import NamedSharding, PartitionSpec

    mesh, mapping = placement
    if names is None:
        return NamedSharding(mesh, PartitionSpec())
    from saikei.toolshed.sharding_util import _spec_for

    probe = NamedArray(jax.ShapeDtypeStruct((0,) * ndim, jnp.float32), axis_names=names)
    return NamedSharding(mesh, _spec_for(probe, mapping, "a restored array"))


def _decode_value(
    entry: dict[str, Any],
    source: Any,
    like: Any = None,
    placement: Any = None,
    names: Any = None,
) -> Any:
    """Rebuilds a value; arrays land where `like` (the value they replace) lives, or on the
    mesh of `placement` (`(mesh, axis mapping)`), or else on the default device."""
    kind = entry["t"]
    if kind == "array":
        dtype = jnp.dtype(entry["dtype"])
        shape = tuple(entry["shape"])
        sharding = _target_sharding(like, names, placement, len(shape)) if entry["jax"] else None
        if sharding is not None:

            def region(index: tuple[slice, ...]) -> np.ndarray:
                piece = source.read(entry["key"], tuple(index))
                return piece.view(dtype) if piece.dtype != dtype else piece

            return jax.make_array_from_callback(shape, sharding, region)
        array = source.read(entry["key"], None)
        if array.dtype != dtype:
            array = array.view(dtype)
        array = array.reshape(shape)
        if not entry["jax"]:
            return array
        if entry.get("weak") and array.ndim == 0:
            # Weakly typed scalars come from Python numbers; rebuilding them from one
            # keeps their promotion behaviour.
            weak = jnp.asarray(array.item())
            if weak.dtype == dtype:
                return weak
        return jnp.asarray(array)
    if kind == "named":
        inner = like.data_array if isinstance(like, NamedArray) else None
        names = tuple(entry["names"])
        data = _decode_value(entry["data"], source, inner, placement, names)
        return NamedArray(data, axis_names=names)
    if kind == "key":
        inner = None
        if isinstance(like, jax.Array) and jnp.issubdtype(like.dtype, jax.dtypes.prng_key):
            inner = jax.random.key_data(like)
        data = _decode_value(entry["data"], source, inner, placement)
        return jax.random.wrap_key_data(data, impl=entry["impl"])
    if kind == "py":
        return entry["v"]
    if kind == "dict":
        likes = like if isinstance(like, dict) else {}
        return {k: _decode_value(v, source, likes.get(k), placement) for k, v in entry["items"]}
    likes = list(like) if isinstance(like, list | tuple) else []
    likes += [None] * (len(entry["items"]) - len(likes))
    items = [_decode_value(v, source, lk, placement) for v, lk in zip(entry["items"], likes)]
    return tuple(items) if kind == "tuple" else items


def _describe(entry: Any) -> str:
    kind = entry["t"]
    if kind == "array":
        return f"{entry['dtype']}{tuple(entry['shape'])}"
    if kind == "named":
        return f"NamedArray(axis_names={tuple(entry['names'])}, data={_describe(entry['data'])})"
    if kind == "key":
        return f"key<{entry['impl']}>({_describe(entry['data'])})"
    if kind == "py":
        return f"{type(entry['v']).__name__} {entry['v']!r}"
    return f"{kind} of {len(entry['items'])}"


def _compare(saved: Any, target: Any, where: str, problems: list[str]) -> None:
    """Appends a line to `problems` for each place the two value descriptions differ."""
    same_kind = saved["t"] == target["t"]
    if same_kind and saved["t"] == "array":
        if saved["dtype"] != target["dtype"] or saved["shape"] != target["shape"]:
            problems.append(
                f"{where}: checkpoint has {_describe(saved)}, model has {_describe(target)}"
            )
        return
    if same_kind and saved["t"] in ("named", "key"):
        if saved.get("names") != target.get("names") or saved.get("impl") != target.get("impl"):
            problems.append(
                f"{where}: checkpoint has {_describe(saved)}, model has {_describe(target)}"
            )
            return
        _compare(saved["data"], target["data"], where, problems)
        return
    if same_kind and saved["t"] == "py":
        if type(saved["v"]) is not type(target["v"]):
            problems.append(
                f"{where}: checkpoint has {_describe(saved)}, model has {_describe(target)}"
            )
        return
    if same_kind and saved["t"] == "dict":
        saved_keys = [k for k, _ in saved["items"]]
        target_keys = [k for k, _ in target["items"]]
        if sorted(saved_keys) != sorted(target_keys):
            problems.append(
                f"{where}: checkpoint has dict keys {saved_keys}, model has {target_keys}"
            )
            return
        target_items = dict(target["items"])
        for k, v in saved["items"]:
            _compare(v, target_items[k], f"{where}[{k!r}]", problems)
        return
    if same_kind and len(saved["items"]) == len(target["items"]):
        for i, (s, t) in enumerate(zip(saved["items"], target["items"], strict=True)):
            _compare(s, t, f"{where}[{i}]", problems)
        return
    problems.append(f"{where}: checkpoint has {_describe(saved)}, model has {_describe(target)}")


# Public API ------------------------------------------------------------------------


def save_variables(model: Any, path: str | os.PathLike[str]) -> None:
    """Saves every `Parameter` and `StateVariable` of `model` to a safetensors file.

    Shared variables (the same object at several places) are saved once. The file
    is written atomically: an interrupted save leaves any previous file intact.

    Args:
      model: A tree holding bound variables (no slots).
      path: The file to write (conventionally ending in `.safetensors`).

    Raises:
      ValueError: if the model holds variable slots, a variable with an automatic
        label, or a value that cannot be stored (the message names its label).

    Example:
      >>> import os, tempfile
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import checkpointing
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
      >>> checkpointing.save_variables({"w": sk.Parameter(value=jnp.ones(2), label="w")}, path)
      >>> sorted(checkpointing.read_variable_labels(path))
      ['w']
    """
    tree, variables = unbind_variables(model)
    _reject_slots(tree, variables, model)
    several = jax.process_count() > 1
    arrays: list[Any] = []

    def sink(array: Any) -> str:
        arrays.append(array)
        return str(len(arrays) - 1)

    tensors: dict[str, np.ndarray] = {}
    records = []
    for var in variables:
        if not isinstance(var, Parameter | StateVariable):
            raise ValueError(
                f"Cannot checkpoint the variable {var!r}: only sk.Parameter and"
                " sk.StateVariable are supported."
            )
        where = f"variable {var.label!r}"
        records.append(
            {
                "label": _encode_label(var.label),
                "kind": "parameter" if isinstance(var, Parameter) else "state",
                "metadata": _json_metadata(var.metadata),
                "value": _encode_value(var.value, where, sink if several else tensors),
            }
        )
    header = {"format": _FORMAT, "variables": records}
    if several:
        _save_sharded(header, arrays, os.fspath(path))
    else:
        _save_file_atomically(tensors, os.fspath(path), {_METADATA_KEY: json.dumps(header)})


def _save_file_atomically(tensors: dict[str, np.ndarray], path: str, metadata: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_SHARD_PATTERN = re.compile(r"\.[0-9a-f]{16}\.\d{5}-of-\d{5}$")
_CHUNKS_KEY = "saikei.chunks"


def _box(index: tuple[slice, ...], shape: tuple[int, ...]) -> list[list[int]]:
    return [list(s.indices(n)[:2]) for s, n in zip(index, shape)]


def _save_sharded(header: dict[str, Any], arrays: list[Any], path: str) -> None:
    """Every process writes the chunks it owns; process 0 then writes the index at `path`.

    Chunk files are named after the index plus a token drawn for this save, so
    an index always names complete files: a save that dies midway leaves the
    previous index and its chunk files untouched. Chunk files of older saves are
    removed once the new index is in place.
    """
    from jax.experimental import multihost_utils

    count, me = jax.process_count(), jax.process_index()
    token = bytes(
        np.asarray(multihost_utils.broadcast_one_to_all(np.frombuffer(os.urandom(8), np.uint8)))
    ).hex()
    directory, base = os.path.split(os.path.abspath(path))
    names = [f"{base}.{token}.{p:05d}-of-{count:05d}" for p in range(count)]
    tensors: dict[str, np.ndarray] = {}
    chunks: list[list[Any]] = []
    for key, array in enumerate(arrays):
        shape = tuple(np.shape(array))
        if isinstance(array, jax.Array) and not array.is_fully_addressable:
            # Each distinct block is written once, by one of the devices holding it,
            # chosen so that replicated blocks are spread over the processes.
            holders: dict[str, list[Any]] = {}
            for device, index in array.sharding.devices_indices_map(shape).items():
                holders.setdefault(json.dumps(_box(index, shape)), []).append(device)
            local = {shard.device: shard for shard in array.addressable_shards}
            for i, (box, devices) in enumerate(sorted(holders.items())):
                devices.sort(key=lambda d: (d.process_index, d.id))
                writer = devices[(i + key) % len(devices)]
                if writer in local:
                    name = f"{key}/{i}"
                    tensors[name] = _storable(np.asarray(local[writer].data))
                    chunks.append([str(key), name, json.loads(box)])
        elif me == 0:
            # Process-local values (counters, host arrays) are the same everywhere.
            tensors[str(key)] = _storable(np.asarray(array))
            chunks.append([str(key), str(key), [[0, n] for n in shape]])
    _save_file_atomically(
        tensors, os.path.join(directory, names[me]), {_CHUNKS_KEY: json.dumps(chunks)}
    )
    multihost_utils.sync_global_devices(f"saikei.checkpointing chunks {token}")
    if me == 0:
        header = {**header, "shards": names}
        _save_file_atomically({}, path, {_METADATA_KEY: json.dumps(header)})
        for old in os.listdir(directory):
            stale = old.startswith(base + ".") and old not in names
            if stale and _SHARD_PATTERN.search(old[len(base) :]):
                os.remove(os.path.join(directory, old))
    multihost_utils.sync_global_devices(f"saikei.checkpointing index {token}")


def _reject_slots(tree: Any, variables: tuple, original: Any) -> None:
    own = {var.get_slot() for var in variables}
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, AbstractVariableSlot)
    )[0]
    for keypath, leaf in leaves:
        if isinstance(leaf, AbstractVariableSlot) and leaf not in own:
            raise ValueError(
                f"save_variables: the model holds the unbound slot {leaf!r} at"
                f" {pretty_keystr(keypath, tree)}; bind its variable before saving."
            )


def _read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    handle = safe_open(os.fspath(path), framework="numpy")
    metadata = handle.metadata() or {}
    if _METADATA_KEY not in metadata:
        raise ValueError(
            f"{os.fspath(path)!r} is a safetensors file but not a saikei checkpoint (its"
            f" metadata has no {_METADATA_KEY!r} entry). Write it with save_variables."
        )
    header = json.loads(metadata[_METADATA_KEY])
    if header.get("format") != _FORMAT:
        raise ValueError(
            f"{os.fspath(path)!r} has checkpoint format {header.get('format')!r}; this"
            f" version of saikei reads {_FORMAT!r}."
        )
    return header, handle


def read_variable_labels(path: str | os.PathLike[str]) -> dict[Any, str]:
    """Lists the variables in a checkpoint without loading any array.

    Args:
      path: A file written by `save_variables`.

    Returns:
      A dict mapping each label to `"parameter"` or `"state"`.

    Example:
      >>> import os, tempfile
      >>> from saikei import sk
      >>> from saikei.toolshed import checkpointing
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
      >>> checkpointing.save_variables([sk.StateVariable(0, label="n")], path)
      >>> checkpointing.read_variable_labels(path)
      {'n': 'state'}
    """
    header, _ = _read_header(path)
    return {_decode_label(r["label"]): r["kind"] for r in header["variables"]}


def restore_variables(
    model_or_slots: Any,
    path: str | os.PathLike[str],
    *,
    mesh: Any = None,
    axis_name_to_mesh_name: Any = None,
) -> Any:
    """Restores the variables saved by `save_variables` into a model, matching by label.

    Variables already bound in `model_or_slots` get their saved values in place
    (so every reference to them sees the restored values); variable slots
    (`sk.ParameterSlot` / `sk.StateVariableSlot`, e.g. from a model built with
    `init_base_rng=None`) are filled with new variables carrying the saved values
    and metadata.

    Arrays are restored with the sharding of the value they replace when that
    value is spread over several devices (or processes), so a model laid out on
    any mesh is restored onto that same layout, whatever mesh the checkpoint was
    saved from; each process reads only the regions its devices hold. Slots (or
    single-device values) go to `mesh` by axis name when it is given, and to the
    default device otherwise.

    Args:
      model_or_slots: A tree holding variables and/or variable slots.
      path: A file written by `save_variables` (in a multi-process run, the
        index file; its chunk files must sit beside it).
      mesh: Optional mesh for values that have no layout yet.
      axis_name_to_mesh_name: With `mesh`, as for
        `sharding_util.name_to_name_sharding` (default: same names).

    Returns:
      The model with every variable bound and holding its saved value.

    Raises:
      CheckpointMismatchError: if the labels, kinds, value structures, axis names,
        shapes or dtypes differ; the message lists every mismatching label
        (missing from the checkpoint, extra in the checkpoint, or differing, with
        both descriptions). Nothing is modified in that case.

    Example:
      >>> import os, tempfile
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import checkpointing
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
      >>> checkpointing.save_variables({"w": sk.Parameter(value=jnp.arange(3.0), label="w")}, path)
      >>> restored = checkpointing.restore_variables({"w": sk.ParameterSlot("w")}, path)
      >>> restored["w"].value
      Array([0., 1., 2.], dtype=float32)
    """
    header, handle = _read_header(path)
    tree, bound = unbind_variables(model_or_slots)
    bound_by_key = {_label_key(var.label): var for var in bound}
    target_kinds: dict[str, str] = {}
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, AbstractVariableSlot))
    for leaf in leaves:
        if isinstance(leaf, ParameterSlot):
            target_kinds[_label_key(leaf.label)] = "parameter"
        elif isinstance(leaf, StateVariableSlot):
            target_kinds[_label_key(leaf.label)] = "state"
    saved = {_label_key(_decode_label(r["label"])): r for r in header["variables"]}

    problems: list[str] = []
    for key in target_kinds:
        if key not in saved:
            problems.append(f"{key!r}: missing from the checkpoint ({target_kinds[key]} in model)")
    for key, record in saved.items():
        if key not in target_kinds:
            problems.append(f"{key!r}: extra in the checkpoint ({record['kind']}, not in model)")
            continue
        if record["kind"] != target_kinds[key]:
            problems.append(
                f"{key!r}: a {record['kind']} in the checkpoint but a {target_kinds[key]}"
                " in the model"
            )
            continue
        if key in bound_by_key:
            current = _encode_value(bound_by_key[key].value, f"variable {key!r}", None)
            _compare(record["value"], current, repr(key), problems)
    if problems:
        raise CheckpointMismatchError(
            f"Cannot restore {os.fspath(path)!r}: {len(problems)} mismatch(es) between the"
            " checkpoint and the model:\n  " + "\n  ".join(problems)
        )

    source = _ChunkSource(os.fspath(path), header["shards"]) if "shards" in header else None
    source = source or _FileSource(handle)
    placement = None
    if mesh is not None:
        from saikei.toolshed.sharding_util import _check_mapping

        placement = (mesh, _check_mapping(mesh, axis_name_to_mesh_name))
    new_variables = []
    values = {}
    for key, record in saved.items():
        like = bound_by_key[key].value if key in bound_by_key else None
        values[key] = _decode_value(record["value"], source, like, placement)
    for key, value in values.items():
        if key in bound_by_key:
            bound_by_key[key].value = value
            continue
        record = saved[key]
        var_type = Parameter if record["kind"] == "parameter" else StateVariable
        new_variables.append(
            var_type(
                value=value,
                label=_decode_label(record["label"]),
                metadata=dict(record["metadata"] or {}),
            )
        )
    return bind_variables(tree, list(bound) + new_variables)
