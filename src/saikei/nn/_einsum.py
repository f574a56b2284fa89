"""`NamedEinsum`: an einsum whose operands and result are indexed by axis name."""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.nn._layer import Layer

NamedArray = named_axes.NamedArray
AxesSpec = tuple[Any, ...] | Mapping[Any, Any]


def _as_index_map(spec: AxesSpec, where: str) -> dict[Any, Any]:
    """Turns a spec into `{axis_name: summation_index}`."""
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, str):
        raise TypeError(
            f"{where}: got the string {spec!r} as an axis spec; use a tuple of names"
            f" such as ({spec!r},) or a dict {{axis_name: index}}."
        )
    names = tuple(spec)
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: axis names are repeated in {names}.")
    return {name: name for name in names}


@functools.lru_cache(maxsize=512)
def _compiled_einsum(subscripts: str) -> Any:
    # Cached per equation: jnp.einsum plans its contraction order in Python on
    # every eager call; jit does that once per shape.
    return jax.jit(functools.partial(jnp.einsum, subscripts))


@pytree_dataclass
class NamedEinsum(Layer):
    """An einsum over a tuple of NamedArrays, with summation indices named per axis.

    Each operand's spec maps its axis names to summation indices (any
    hashable labels); indices shared between operands are multiplied
    together, and indices missing from the output are summed over. A tuple
    of names is shorthand for "each axis is its own index". For example, the
    einsum `"thp,shp->hts"` of attention logits can be written

      NamedEinsum((("tokens", "heads", "projection"),
                   ("kv_tokens", "heads", "projection")),
                  ("heads", "tokens", "kv_tokens"))

    Operands may also share *batch* axes that no spec mentions: every operand
    must then have them (with the same sizes), and they are kept in the
    output, in front of the output spec's axes.

    Attributes:
      input_axes: One spec per operand: a tuple of axis names, or a dict
        `{axis_name: index}`.
      output_axes: The output spec, in the same form.

    Example:
      >>> from saikei import sk
      >>> einsum = sk.nn.NamedEinsum(
      ...     (("tokens", "heads", "projection"), ("kv_tokens", "heads", "projection")),
      ...     ("heads", "tokens", "kv_tokens"))
      >>> q = sk.nx.ones({"batch": 2, "tokens": 3, "heads": 4, "projection": 5})
      >>> k = sk.nx.ones({"batch": 2, "kv_tokens": 6, "heads": 4, "projection": 5})
      >>> einsum((q, k)).named_shape
      {'batch': 2, 'heads': 4, 'tokens': 3, 'kv_tokens': 6}
    """

    input_axes: tuple[AxesSpec, ...] = dataclasses.field(metadata={"pytree_node": False})
    output_axes: AxesSpec = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, arrays: Sequence[NamedArray], /, **side_inputs: Any) -> NamedArray:
        where = f"NamedEinsum(input_axes={self.input_axes!r}, output_axes={self.output_axes!r})"
        specs = [
            _as_index_map(spec, f"{where}, input_axes[{i}]")
            for i, spec in enumerate(self.input_axes)
        ]
        output = _as_index_map(self.output_axes, f"{where}, output_axes")
        if not isinstance(arrays, tuple | list) or len(arrays) != len(specs):
            count = len(arrays) if isinstance(arrays, tuple | list) else type(arrays).__name__
            raise ValueError(
                f"{where}: expected a tuple of {len(specs)} NamedArrays (one per input spec),"
                f" got {count}."
            )
        batch = _check_operands(where, arrays, specs)

        letters: dict[Any, str] = {}

        def letter(key: Any) -> str:
            if key not in letters:
                if len(letters) == len(string.ascii_letters):
                    raise ValueError(f"{where}: too many distinct indices (at most 52).")
                letters[key] = string.ascii_letters[len(letters)]
            return letters[key]

        sizes: dict[Any, tuple[int, int]] = {}
        problems = []
        for i, (array, spec) in enumerate(zip(arrays, specs)):
            for name, size in array.named_shape.items():
                if name in spec:
                    key = ("index", spec[name])
                    first = sizes.setdefault(key, (size, i))
                    if first[0] != size:
                        problems.append(
                            f"index {spec[name]!r} has size {first[0]} in operand {first[1]}"
                            f" but axis {name!r} of operand {i} has size {size}"
                        )
        if problems:
            raise ValueError(f"{where}: {'; '.join(problems)}.")
        input_terms = [
            "".join(
                letter(("index", spec[name]) if name in spec else ("batch", name))
                for name in array.axis_names
            )
            for array, spec in zip(arrays, specs)
        ]
        unknown = [index for index in output.values() if ("index", index) not in letters]
        repeated = {index for index in output.values() if list(output.values()).count(index) > 1}
        clash = [name for name in output if name in batch]
        if unknown or repeated or clash:
            raise ValueError(
                f"{where}: bad output spec: "
                + "; ".join(
                    text
                    for text in (
                        unknown and f"indices {unknown} appear in no input",
                        repeated and f"indices {sorted(map(repr, repeated))} are repeated",
                        clash and f"axes {clash} are also batch axes of the inputs",
                    )
                    if text
                )
                + "."
            )
        output_term = "".join(letter(("batch", name)) for name in batch) + "".join(
            letter(("index", index)) for index in output.values()
        )
        subscripts = ",".join(input_terms) + "->" + output_term
        data = _compiled_einsum(subscripts)(*(array.data_array for array in arrays))
        return NamedArray(data, (*batch, *output))


def _check_operands(
    where: str, arrays: Sequence[Any], specs: list[dict[Any, Any]]
) -> tuple[Any, ...]:
    """Checks the operands and returns the batch axis names (in operand 0's order)."""
    for i, array in enumerate(arrays):
        if not isinstance(array, NamedArray):
            raise TypeError(f"{where}: operand {i} is a {type(array).__name__}, not a NamedArray.")
        if array.positional_shape:
            raise ValueError(
                f"{where}: operand {i} has positional axes (positional_shape"
                f" {array.positional_shape}, named_shape {array.named_shape}); name them first."
            )
    problems = []
    for i, (array, spec) in enumerate(zip(arrays, specs)):
        missing = [name for name in spec if name not in array.named_shape]
        if missing:
            problems.append(
                f"operand {i} (named_shape {array.named_shape}) lacks axes {missing} of its spec"
            )
    batch_shapes = [
        {n: s for n, s in array.named_shape.items() if n not in spec}
        for array, spec in zip(arrays, specs)
    ]
    reference = batch_shapes[0] if batch_shapes else {}
    for i, shape in enumerate(batch_shapes[1:], start=1):
        if shape != reference:
            problems.append(
                f"operand {i} has batch axes {shape} but operand 0 has {reference} (axes"
                " outside the specs must be in every operand, with the same sizes)"
            )
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}.")
    return tuple(reference)
