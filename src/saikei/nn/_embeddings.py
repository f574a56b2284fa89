"""PLACEHOLDER: replaced by the module's real implementation this session."""

EmbeddingTable = None
EmbeddingLookup = None
EmbeddingDecode = None
ApplyRoPE = None
ApplyRoPEToSubset = None
