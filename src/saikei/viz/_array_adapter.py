"""A treescope NDArray adapter for NamedArrays: array figures addressed by axis name.

With this adapter, `treescope.render_array(x, rows=["seq"], columns=["heads"])`
and the array autovisualizer lay NamedArrays out by axis name. Named axes are
`NamedPositionlessAxisInfo`, positional ones `PositionalAxisInfo` (numbered
among the positional axes only). Axis infos are listed in the order of the
data's dimensions, so the data never has to be transposed for rendering.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from treescope import ndarray_adapters, rendering_parts
from treescope.external import jax_support

from saikei.core.named_axes import NamedArray
from saikei.viz._named_array_handlers import (
    named_array_shape_summary,
    value_statistics,
    wrapped_kind,
)


def _full_names(array: NamedArray) -> tuple[Any, ...]:
    names = array.axis_names
    return (None,) * (array.data_array.ndim - len(names)) + tuple(names)


def _concrete_data(array: NamedArray, what: str) -> jax.Array:
    data = array.data_array
    if isinstance(data, jax.core.Tracer) or not hasattr(data, "__array__"):
        raise TypeError(
            f"{what}: cannot render a NamedArray ({named_array_shape_summary(array)}) that"
            f" wraps a {wrapped_kind(data)}; render it outside of jit/vmap, with concrete"
            " values."
        )
    if isinstance(data, jax.Array):
        if data.is_deleted():
            raise ValueError(
                f"{what}: the NamedArray ({named_array_shape_summary(array)}) wraps a"
                " deleted jax.Array (its buffer was donated or deleted)."
            )
        return data
    return jnp.asarray(data)


def mask_in_layout_of(array: NamedArray, mask: Any) -> Any:
    """Lays a valid mask out along the data dimensions of `array`.

    A NamedArray mask is matched by axis name; its positional axes, like those
    of a plain array mask, broadcast against the positional axes of `array`
    (aligned on the right, numpy-style). Axes the mask lacks get size 1.

    Args:
      array: The NamedArray being rendered.
      mask: A boolean NamedArray, jax/numpy array, or scalar.

    Returns:
      An array with one dimension per data dimension of `array`, each of size
      1 or the size of that dimension.

    Raises:
      ValueError: If the mask has an axis name `array` lacks, or a size that
        does not broadcast.

    Example:
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.viz._array_adapter import mask_in_layout_of
      >>> x = sk.nx.zeros({"seq": 3, "heads": 2})
      >>> mask_in_layout_of(x, sk.nx.wrap(np.array([True, False]), "heads")).shape
      (1, 2)
    """
    if not isinstance(mask, NamedArray):
        mask = NamedArray(jnp.asarray(mask))
    mask_data = mask.data_array
    mask_full = _full_names(mask)
    full = _full_names(array)
    shape = tuple(array.data_array.shape)
    extra = [n for n in mask_full if n is not None and n not in full]
    if extra:
        raise ValueError(
            f"valid_mask has named axes {extra} that the array"
            f" ({named_array_shape_summary(array)}) does not have; a mask may only use the"
            " array's axis names (missing ones broadcast)."
        )
    mask_positional = [d for d, n in enumerate(mask_full) if n is None]
    array_positional = [d for d, n in enumerate(full) if n is None]
    if len(mask_positional) > len(array_positional):
        raise ValueError(
            f"valid_mask ({named_array_shape_summary(mask)}) has more positional axes than"
            f" the array ({named_array_shape_summary(array)})."
        )
    # For each data dimension of `array`, the mask dimension that feeds it.
    source: list[int | None] = [None] * len(full)
    for mask_dim, array_dim in zip(mask_positional[::-1], array_positional[::-1], strict=False):
        source[array_dim] = mask_dim
    for mask_dim, name in enumerate(mask_full):
        if name is not None:
            source[full.index(name)] = mask_dim
    for array_dim, mask_dim in enumerate(source):
        if mask_dim is not None and mask_data.shape[mask_dim] not in (1, shape[array_dim]):
            label = full[array_dim] if full[array_dim] is not None else "positional"
            raise ValueError(
                f"valid_mask axis {label!r} has size {mask_data.shape[mask_dim]}, which does"
                f" not broadcast to {shape[array_dim]} in the array"
                f" ({named_array_shape_summary(array)})."
            )
    order = [d for d in source if d is not None]
    xnp = np if isinstance(mask_data, np.ndarray) else jnp
    laid_out = xnp.transpose(mask_data, order) if order != sorted(order) else mask_data
    return xnp.reshape(
        laid_out,
        tuple(1 if d is None else mask_data.shape[d] for d in source),
    )


class NamedArrayAdapter(ndarray_adapters.NDArrayAdapter[NamedArray]):
    """Treescope NDArray adapter for `sk.nx.NamedArray` (returned by its hook method).

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> x = sk.nx.zeros({"seq": 3, "heads": 2})
      >>> treescope.type_registries.lookup_ndarray_adapter(x).get_axis_info_for_array_data(x)
      (NamedPositionlessAxisInfo(axis_name='seq', size=3), NamedPositionlessAxisInfo(axis_name='heads', size=2))
    """

    def get_axis_info_for_array_data(
        self, array: NamedArray
    ) -> tuple[ndarray_adapters.AxisInfo, ...]:
        """One axis info per data dimension: positional index or axis name, and size."""
        infos: list[ndarray_adapters.AxisInfo] = []
        position = 0
        for name, size in zip(_full_names(array), array.data_array.shape):
            if name is None:
                infos.append(ndarray_adapters.PositionalAxisInfo(position, int(size)))
                position += 1
            else:
                infos.append(ndarray_adapters.NamedPositionlessAxisInfo(name, int(size)))
        return tuple(infos)

    def get_array_data_with_truncation(
        self,
        array: NamedArray,
        mask: Any,
        edge_items_per_axis: tuple[int | None, ...],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (truncated) values and valid mask, both in the data's own layout."""
        data = _concrete_data(array, "render_array")
        shape = tuple(data.shape)
        mask_data = np.array(True) if mask is None else mask_in_layout_of(array, mask)
        if mask_data.ndim == 0:
            mask_data = np.broadcast_to(np.asarray(mask_data), (1,) * len(shape))
        if all(e is None for e in edge_items_per_axis):
            return np.asarray(data), np.broadcast_to(np.asarray(mask_data, dtype=bool), shape)
        values, valid = jax_support.truncate_array_and_mask(data, mask_data, edge_items_per_axis)
        values, valid = jax.device_get((values, valid))
        return np.asarray(values), np.asarray(valid, dtype=bool)

    def get_array_summary(
        self, array: NamedArray, fast: bool
    ) -> rendering_parts.RenderableTreePart:
        """`NamedArray dtype(positional | named)` plus statistics unless `fast`."""
        parts: list[Any] = [
            f"{type(array).__name__} {named_array_shape_summary(array)}",
        ]
        if not fast:
            parts.append(
                rendering_parts.abbreviatable(
                    rendering_parts.text(value_statistics(array.data_array)),
                    rendering_parts.empty_part(),
                )
            )
        return rendering_parts.siblings(*parts)

    def get_numpy_dtype(self, array: NamedArray) -> np.dtype | None:
        """The dtype of the wrapped data, if it is a numpy dtype."""
        dtype = array.data_array.dtype
        return dtype if isinstance(dtype, np.dtype) else None

    def get_sharding_info_for_array_data(
        self, array: NamedArray
    ) -> ndarray_adapters.ShardingInfo | None:
        """The sharding of the wrapped jax.Array (per data dimension), or None."""
        data = array.data_array
        if not isinstance(data, jax.Array) or isinstance(data, jax.core.Tracer):
            return None
        if data.is_deleted():
            return None
        return jax_support.JAXArrayAdapter().get_sharding_info_for_array_data(data)

    def should_autovisualize(self, array: NamedArray) -> bool:
        """Only concrete, live arrays are drawn."""
        data = array.data_array
        if isinstance(data, jax.core.Tracer):
            return False
        if isinstance(data, jax.Array):
            return not data.is_deleted()
        return isinstance(data, np.ndarray)
