"""How StateVariables behave inside a LayerStack (shared by attention and LayerStack)."""

from __future__ import annotations

import enum
from typing import Any

LAYERSTACK_AXES_METADATA_KEY = "layerstack_axes"
"""StateVariable metadata key: a dict `{stack_axis_name: LayerStackVarBehavior}`."""

LAYERSTACK_INDEX_INPUT_NAME = "layerstack_index"
"""Side input a LayerStack gives its layers: `{stack_axis: index of the running layer}`.

Merged with the dict of any enclosing LayerStack; the indices are int32
scalars. A KVCachingAttention inside a stack reads it to write and read its
own slice of one cache stacked over the layers (see `LayerStackVarBehavior`).
"""

ANY_STACK_AXIS = "*"
"""Key of `layerstack_axes` that applies to every stack axis not named (e.g. savers)."""


class LayerStackVarBehavior(enum.Enum):
    """What a StateVariable inside a LayerStack's prototype means per layer.

    SHARED: one value seen and updated by every layer in turn (it is carried
    through the scan). PER_LAYER: each layer has its own slice of the value
    along the stack axis (e.g. a KV cache).

    Put `{"layerstack_axes": {"blocks": LayerStackVarBehavior.PER_LAYER}}` in a
    StateVariable's metadata to declare it.

    Example:
      >>> from saikei import sk
      >>> sk.nn.LayerStackVarBehavior.PER_LAYER.name
      'PER_LAYER'
    """

    SHARED = "shared"
    PER_LAYER = "per_layer"


def declared_behavior(variable: Any, axis: Any) -> Any:
    """What `variable`'s metadata declares for the stack axis `axis`, or None.

    The entry for `axis` if there is one, else the `"*"` entry; None when the
    metadata declares neither. The value is returned as it is (checking that
    it is a `LayerStackVarBehavior` is the caller's business).

    Example:
      >>> from saikei import sk
      >>> var = sk.StateVariable(0, label="v", metadata={"layerstack_axes": {"*": "x"}})
      >>> declared_behavior(var, "blocks"), declared_behavior(sk.StateVariable(0), "blocks")
      ('x', None)
    """
    axes = (getattr(variable, "metadata", None) or {}).get(LAYERSTACK_AXES_METADATA_KEY)
    if not isinstance(axes, dict):
        return None
    return axes[axis] if axis in axes else axes.get(ANY_STACK_AXIS)
