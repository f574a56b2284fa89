"""PLACEHOLDER: replaced by the module's real implementation this session."""

Attention = None
KVCachingAttention = None
ApplyExplicitAttentionMask = None
ApplyCausalAttentionMask = None
ApplyCausalSlidingWindowAttentionMask = None
