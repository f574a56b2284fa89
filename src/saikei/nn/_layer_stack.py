"""PLACEHOLDER: replaced by the module's real implementation this session."""

LayerStack = None
LayerStackGetAttrKey = None
layerstack_axes_from_keypath = None
