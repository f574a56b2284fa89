"""penzai's module path for the KV-caching model, kept so migrated imports work.

`from penzai.models.transformer import sampling_mode` becomes
`from saikei.models.transformer import sampling_mode`; the class itself lives
in `saikei.models.transformer.sampling` (and at the package top level).

Example:
  >>> from saikei.models.transformer import sampling, sampling_mode
  >>> sampling_mode.KVCachingTransformerLM is sampling.KVCachingTransformerLM
  True
"""

from saikei.models.transformer.sampling import KVCachingTransformerLM as KVCachingTransformerLM

__all__ = ["KVCachingTransformerLM"]
