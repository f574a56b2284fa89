"""penzai's module path for its Python-loop sampler, kept so migrated imports work.

`temperature_sample_pyloop` lives in `saikei.models.transformer.sampling`;
`generate` there is the compiled loop to prefer in new code.

Example:
  >>> from saikei.models.transformer import sampling, simple_decoding_loop
  >>> simple_decoding_loop.temperature_sample_pyloop is sampling.temperature_sample_pyloop
  True
"""

from saikei.models.transformer.sampling import (
    temperature_sample_pyloop as temperature_sample_pyloop,
)

__all__ = ["temperature_sample_pyloop"]
