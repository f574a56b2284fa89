"""penzai's module name for the llama-like family: the same names as `variants.llamalike`.

Example:
  >>> from saikei.models.transformer.variants import llamalike, llamalike_common
  >>> llamalike_common.build_llamalike_transformer is llamalike.build_llamalike_transformer
  True
"""

from saikei.models.transformer.variants.llamalike import AttentionType as AttentionType
from saikei.models.transformer.variants.llamalike import (
    AttentionTypeGlobalCausal as AttentionTypeGlobalCausal,
)
from saikei.models.transformer.variants.llamalike import (
    AttentionTypeSlidingWindowCausal as AttentionTypeSlidingWindowCausal,
)
from saikei.models.transformer.variants.llamalike import (
    LlamalikeTransformerConfig as LlamalikeTransformerConfig,
)
from saikei.models.transformer.variants.llamalike import RoPESettings as RoPESettings
from saikei.models.transformer.variants.llamalike import (
    build_llamalike_attention as build_llamalike_attention,
)
from saikei.models.transformer.variants.llamalike import (
    build_llamalike_block as build_llamalike_block,
)
from saikei.models.transformer.variants.llamalike import (
    build_llamalike_feedforward as build_llamalike_feedforward,
)
from saikei.models.transformer.variants.llamalike import (
    build_llamalike_transformer as build_llamalike_transformer,
)
from saikei.models.transformer.variants.llamalike import (
    llamalike_from_huggingface_model as llamalike_from_huggingface_model,
)
