"""Builders for families of transformer architectures.

`llamalike` (with penzai's alias `llamalike_common`), `gpt_neox` and `gpt2`
hold the builders; `llama`, `mistral` and `gemma` are penzai's per-architecture
entry points over the llama-like builder.
"""

from saikei.models.transformer.variants import gemma as gemma
from saikei.models.transformer.variants import gpt2 as gpt2
from saikei.models.transformer.variants import gpt_neox as gpt_neox
from saikei.models.transformer.variants import llama as llama
from saikei.models.transformer.variants import llamalike as llamalike
from saikei.models.transformer.variants import llamalike_common as llamalike_common
from saikei.models.transformer.variants import mistral as mistral
