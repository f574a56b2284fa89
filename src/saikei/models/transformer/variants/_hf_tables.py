"""Tables that map a Hugging Face checkpoint's tensors to saikei parameter values.

Every family's `params_from_hf` and `params_to_hf` (see `_families`) list the
checkpoint's tensors as `HFTensor` rows, built mostly with `value` and
`linear`, and hand the list to `read_tensors` or `write_tensors`: one table
serves both directions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes as nx
from saikei.models.transformer import _families
from saikei.models.transformer._families import positional


@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One HF tensor and the parameter value(s) it holds.

    The tensor is reshaped to `sizes`. With `split_axis` None it is the value
    of `labels[0]` with axis names `names`; otherwise its `split_axis` indexes
    the values of `labels` (a fused projection), each named `names`. Our
    values are the checkpoint's plus `offset` (added in float32).

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> _hf_tables.HFTensor("w", (6,), ("a",), ("x", "y"), (2, 3)).split_axis is None
      True
    """

    hf_name: str
    hf_shape: tuple[int, ...]
    labels: tuple[str, ...]
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    split_axis: int | None = None
    offset: float = 0.0


def value(hf_name: str, label: str, axes: Mapping[str, int], offset: float = 0.0) -> HFTensor:
    """A tensor that holds one value, laid out as the value's `axes` (names and sizes, in order).

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> t = _hf_tables.value("lm_head.weight", "lm_head.weights", {"vocabulary": 5,
      ...     "embedding": 4})
      >>> t.hf_shape, t.names
      ((5, 4), ('vocabulary', 'embedding'))
    """
    sizes = tuple(axes.values())
    return HFTensor(hf_name, sizes, (label,), tuple(axes), sizes, offset=offset)


def weights_label(name: str, bias: bool) -> str:
    """The label suffix of a projection's weight (`nn.Affine` if biased, else `nn.Linear`).

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> _hf_tables.weights_label("mlp/out", True), _hf_tables.weights_label("mlp/out", False)
      ('mlp/out/Linear.weights', 'mlp/out.weights')
    """
    return f"{name}/Linear.weights" if bias else f"{name}.weights"


def bias_label(name: str) -> str:
    """The label suffix of a biased projection's bias.

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> _hf_tables.bias_label("mlp/out")
      'mlp/out/AddBias.bias'
    """
    return f"{name}/AddBias.bias"


def linear(
    label: str,
    hf_prefix: str,
    out_axes: Mapping[str, int],
    in_axes: Mapping[str, int],
    *,
    bias: bool,
    transposed: bool = False,
) -> list[HFTensor]:
    """The weight (and bias) of a projection, stored as `{hf_prefix}.weight` (and `.bias`).

    The weight is a matrix `(out, in)`, as `torch.nn.Linear` stores it, or
    `(in, out)` if `transposed` (GPT-2's `Conv1D`); each side flattens its
    axes in order. The bias is a vector over the output.

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> w, b = _hf_tables.linear("attention/query", "q_proj",
      ...     {"heads": 2, "projection": 4}, {"embedding": 8}, bias=True)
      >>> w.hf_shape, w.labels, w.names
      ((8, 8), ('attention/query/Linear.weights',), ('heads', 'projection', 'embedding'))
      >>> b.hf_name, b.hf_shape, b.names
      ('q_proj.bias', (8,), ('heads', 'projection'))
    """
    out_size, in_size = math.prod(out_axes.values()), math.prod(in_axes.values())
    first, second = (in_axes, out_axes) if transposed else (out_axes, in_axes)
    weight = HFTensor(
        f"{hf_prefix}.weight",
        (in_size, out_size) if transposed else (out_size, in_size),
        (weights_label(label, bias),),
        (*first, *second),
        (*first.values(), *second.values()),
    )
    if not bias:
        return [weight]
    return [
        weight,
        HFTensor(
            f"{hf_prefix}.bias",
            (out_size,),
            (bias_label(label),),
            tuple(out_axes),
            tuple(out_axes.values()),
        ),
    ]


def layer_norm(label: str, hf_prefix: str, width: int) -> list[HFTensor]:
    """The scale and shift of a LayerNorm over `embedding` of size `width`.

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> [t.labels[0] for t in _hf_tables.layer_norm("final_norm", "ln_f", 4)]
      ['final_norm/scale.weights', 'final_norm/shift.bias']
    """
    axes = {"embedding": width}
    return [
        value(f"{hf_prefix}.weight", f"{label}/scale.weights", axes),
        value(f"{hf_prefix}.bias", f"{label}/shift.bias", axes),
    ]


def qkv_labels(bias: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The weight labels and bias labels of the query, key and value projections.

    Example:
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> _hf_tables.qkv_labels(False)[0]
      ('attention/query.weights', 'attention/key.weights', 'attention/value.weights')
    """
    which = ("query", "key", "value")
    weights = tuple(weights_label(f"attention/{w}", bias) for w in which)
    return weights, tuple(bias_label(f"attention/{w}") for w in which)


def _parts(t: HFTensor, get: _families.TensorGetter) -> list[Any]:
    """The value(s) `t` holds, one per label: numpy arrays for host values.

    Host values are reshaped and split with numpy: the same steps on JAX
    arrays compile a small XLA program for every new shape. Sharded or
    accelerator values (a sharded load) stay JAX arrays where they are.
    """
    raw = get(t.hf_name, t.hf_shape)
    xp = np if _families.on_host(raw) else jnp
    data = xp.asarray(raw).reshape(t.sizes)
    if t.offset:
        data = (data.astype(xp.float32) + t.offset).astype(data.dtype)
    if t.split_axis is None:
        return [data]
    return [data[(slice(None),) * t.split_axis + (i,)] for i in range(len(t.labels))]


def _to_jax(value: Any) -> jax.Array:
    return value if isinstance(value, jax.Array) else jax.device_put(value)


def read_tensors(
    tensors: Sequence[HFTensor], get: _families.TensorGetter
) -> dict[str, nx.NamedArray]:
    """Reads `tensors` from a checkpoint into parameter values keyed by label suffix.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> t = _hf_tables.HFTensor("w", (6,), ("a", "b", "c"), ("x",), (3, 2), split_axis=0)
      >>> values = _hf_tables.read_tensors([t], lambda key, shape: np.arange(6.0))
      >>> values["b"].unwrap("x").tolist()
      [2.0, 3.0]
    """
    out: dict[str, nx.NamedArray] = {}
    for t in tensors:
        for label, part in zip(t.labels, _parts(t, get), strict=False):
            out[label] = nx.wrap(_to_jax(part), *t.names)
    return out


def read_stacked(
    layers: Sequence[Sequence[HFTensor]], get: _families.TensorGetter
) -> dict[str, nx.NamedArray]:
    """Reads the same tensors of several layers into values stacked on a `blocks` axis.

    Keys are `blocks/{label}`, as `_families.arrange_blocks` names them. Each
    tensor is copied straight into its stacked array, layer after layer, so
    loading never holds a per-layer copy of the model beside the stacked one.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> layers = [[_hf_tables.value(f"l{i}.w", "w", {"x": 2})] for i in range(3)]
      >>> values = _hf_tables.read_stacked(layers, lambda key, shape: np.full(shape, int(key[1])))
      >>> values["blocks/w"].unwrap("blocks", "x").tolist()
      [[0, 0], [1, 1], [2, 2]]
    """
    out: dict[str, nx.NamedArray] = {}
    for specs in zip(*layers, strict=True):
        # Per label: one numpy array filled layer by layer (host values), or
        # the list of sharded values to stack with JAX.
        stacked: list[Any] = []
        for i, t in enumerate(specs):
            for k, part in enumerate(_parts(t, get)):
                if i == 0:
                    host = isinstance(part, np.ndarray)
                    stacked.append(np.empty((len(specs), *part.shape), part.dtype) if host else [])
                if isinstance(stacked[k], list):
                    stacked[k].append(part)
                else:
                    stacked[k][i] = part
        for label, array in zip(specs[0].labels, stacked, strict=True):
            value = jnp.stack(array) if isinstance(array, list) else jax.device_put(array)
            out[f"blocks/{label}"] = nx.wrap(value, "blocks", *specs[0].names)
    return out


def read_blocks(
    layers: Sequence[Sequence[HFTensor]], get: _families.TensorGetter, use_layer_stack: bool
) -> dict[str, nx.NamedArray]:
    """Reads every block's tensors, placed as `_families.arrange_blocks` places them.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> layers = [[_hf_tables.value(f"l{i}.w", "w", {"x": 2})] for i in range(2)]
      >>> sorted(_hf_tables.read_blocks(layers, lambda key, shape: np.ones(shape), False))
      ['block_0/w', 'block_1/w']
    """
    if use_layer_stack and layers:
        return read_stacked(layers, get)
    return _families.arrange_blocks([read_tensors(t, get) for t in layers], False)


def write_tensors(
    tensors: Sequence[HFTensor], values: Mapping[str, nx.NamedArray]
) -> dict[str, np.ndarray]:
    """The inverse of `read_tensors`: HF-named numpy arrays from parameter values.

    Example:
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> t = _hf_tables.HFTensor("w", (4,), ("a", "b"), ("x",), (2, 2), split_axis=0)
      >>> ours = {"a": sk.nx.zeros({"x": 2}), "b": sk.nx.ones({"x": 2})}
      >>> _hf_tables.write_tensors([t], ours)["w"].tolist()
      [0.0, 0.0, 1.0, 1.0]
    """
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        parts = [positional(values[label], *t.names) for label in t.labels]
        data = parts[0] if t.split_axis is None else np.stack(parts, axis=t.split_axis)
        data = data.reshape(t.hf_shape)
        if t.offset:
            data = (data.astype(np.float32) - t.offset).astype(data.dtype)
        out[t.hf_name] = data
    return out


def get_first(
    get: _families.TensorGetter, hf_names: Sequence[str], shape: tuple[int, ...]
) -> tuple[str, Any]:
    """Returns `(name, tensor)` for the first of `hf_names` the checkpoint has with `shape`.

    Checkpoints of one architecture sometimes name a tensor differently
    (e.g. Pythia's `embed_out.weight`, HF's newer `lm_head.weight`). If none
    fits, the error quotes why each did not.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _hf_tables
      >>> def get(key, shape):
      ...     if key != "b":
      ...         raise ValueError(f"missing tensor {key!r}")
      ...     return np.zeros(shape)
      >>> _hf_tables.get_first(get, ["a", "b"], (2,))[0]
      'b'
    """
    errors = []
    for hf_name in hf_names:
        try:
            return hf_name, get(hf_name, shape)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(f"none of the tensors {list(hf_names)} fits: " + " / ".join(errors))
