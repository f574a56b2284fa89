"""PLACEHOLDER: replaced by the module's real implementation this session."""

Standardize = None
RMSStandardize = None
LayerNorm = None
RMSLayerNorm = None
