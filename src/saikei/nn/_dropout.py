"""PLACEHOLDER: replaced by the module's real implementation this session."""

StochasticDropout = None
DisabledDropout = None
maybe_dropout = None
