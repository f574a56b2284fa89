"""Transformer language models built from `sk.nn` combinators.

Load, build, export and run decoder-only language models:

- `load_pretrained(path)`: a Hugging Face model directory (safetensors, sharded
  or not) or a `.gguf` file, read without torch; `save_pretrained(model, path)`
  writes a directory `transformers` loads; `load_tokenizer(path)` gives the
  matching tokenizer offline; `from_huggingface_model(hf_model)` converts a
  live `transformers` model.
- Architectures (`variants`): the llama-like family (Llama 1/2/3.x, Mistral,
  Qwen2, Qwen3, Gemma 1/2/3), GPT-NeoX/Pythia and GPT-2, each buildable with a
  list of blocks or a `LayerStack`; `supported_model_types()` lists the HF
  `model_type`s.
- `KVCachingTransformerLM.from_uncached(model, ...)` and `generate(model,
  prompt, ...)`, a decode loop compiled as one `lax.while_loop`;
  `temperature_sample_pyloop` keeps penzai's Python-loop sampler.
"""

from saikei.models.transformer import model_parts as model_parts
from saikei.models.transformer import sampling as sampling
from saikei.models.transformer import variants as variants
from saikei.models.transformer._families import from_huggingface_model as from_huggingface_model
from saikei.models.transformer._families import supported_model_types as supported_model_types
from saikei.models.transformer.loading import load_pretrained as load_pretrained
from saikei.models.transformer.loading import load_tokenizer as load_tokenizer
from saikei.models.transformer.loading import save_pretrained as save_pretrained
from saikei.models.transformer.model_parts import TransformerLM as TransformerLM
from saikei.models.transformer.sampling import KVCachingTransformerLM as KVCachingTransformerLM
from saikei.models.transformer.sampling import generate as generate
from saikei.models.transformer.sampling import (
    temperature_sample_pyloop as temperature_sample_pyloop,
)
