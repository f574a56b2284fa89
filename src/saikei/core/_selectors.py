"""PLACEHOLDER: replaced by the module's real implementation this session."""

Selection = None
select = None
SelectionHole = None
SelectionQuote = None
