"""Builders for families of transformer architectures."""

from saikei.models.transformer.variants import gpt2 as gpt2
from saikei.models.transformer.variants import gpt_neox as gpt_neox
from saikei.models.transformer.variants import llamalike as llamalike
