"""PLACEHOLDER: replaced by the module's real implementation this session."""

NamedEinsum = None
