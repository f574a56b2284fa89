"""Builders for families of transformer architectures."""

from saikei.models.transformer.variants import llamalike as llamalike
