"""Transformer language models built from `sk.nn` combinators."""

from saikei.models.transformer import model_parts as model_parts
from saikei.models.transformer import variants as variants
