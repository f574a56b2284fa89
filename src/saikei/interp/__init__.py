"""saikei.interp (`sk.interp`): look inside transformer language models and change them.

Hook points are layers, caches are outputs. `with_hook_points(lm)` puts named
identity layers (`HookPoint`) at the standard places of any `TransformerLM`
saikei builds or loads (or `load_pretrained(path, hook_points=True)`), and
`hook_names(lm)` lists them in execution order:

  >>> import jax
  >>> from saikei import sk
  >>> from saikei.models.transformer.variants import llamalike
  >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
  ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
  ...     vocab_size=11)
  >>> lm = sk.interp.with_hook_points(
  ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)))
  >>> sk.interp.hook_names(lm)[:4]
  ['embed', 'blocks.0.resid_pre', 'blocks.0.attn.q', 'blocks.0.attn.k']

Hook point names (`i` is the block index):

  ============================== =================================================
  name                           value
  ============================== =================================================
  `embed`                        token embeddings (after Gemma's scaling)
  `pos_embed`                    learned position embeddings (GPT-2)
  `blocks.{i}.resid_pre`         residual stream entering block i
  `blocks.{i}.resid_mid`         after the attention residual (sequential blocks)
  `blocks.{i}.resid_post`        residual stream leaving block i
  `blocks.{i}.attn.q|k|v`        queries, keys, values (after RoPE, before scaling)
  `blocks.{i}.attn.scores`       attention logits: scaled, soft-capped, masked
  `blocks.{i}.attn.pattern`      attention weights (after the softmax)
  `blocks.{i}.attn.z`            per-head mixed values (input of the output proj.)
  `blocks.{i}.attn.result`       per-head output in embedding space, without the
                                 output bias, before Gemma's post-attention norm
                                 (computed only when asked for)
  `blocks.{i}.attn_out`          what attention adds to the residual stream
  `blocks.{i}.mlp.pre`           MLP activation input (the gate's, for gated MLPs)
  `blocks.{i}.mlp.post`          input of the MLP output projection
  `blocks.{i}.mlp_out`           what the MLP adds to the residual stream
  `final_norm`                   normalized residual entering the unembedding
  `logits`                       the model's output
  ============================== =================================================

`resid_post == resid_pre + attn_out + mlp_out` in every family (parallel
GPT-NeoX blocks included), and `resid_mid == resid_pre + attn_out`.
`ActivationCache.head_results()` gives per-head results that sum to
`attn_out` in every family: with Gemma 2/3's post-attention norm, each head's
`attn.result` is scaled by the norm with its denominator (the RMS of the
summed heads) frozen from the real run.

Axis names of the values users get (from a cache, in interventions); batch
axes are whatever the tokens carry, and the order of axes carries no meaning:

  ================================================ ============================================
  values                                           named axes
  ================================================ ============================================
  embed, pos_embed, resid_*, attn_out, mlp_out,    batch..., `seq`, `embedding`
  final_norm
  attn.q, attn.z                                   batch..., `seq`, `heads`, `projection`
  attn.k, attn.v                                   batch..., `seq`, `kv_heads`, `projection`
  attn.scores, attn.pattern                        batch..., `heads`, `seq`, `kv_seq`
  attn.result                                      batch..., `seq`, `heads`, `embedding`
  mlp.pre, mlp.post                                batch..., `seq`, `neurons`
  logits                                           batch..., `seq`, `vocabulary`
  stacked over blocks (`ActivationCache.stack`,     `layer` added
  accumulated residuals, patching grids, head
  scores)
  ================================================ ============================================

`heads` is one axis in Hugging Face head order: in a grouped-query model,
query head `h` belongs to key/value head `h // (heads // kv_heads)`. Inside
the model, grouped-query attention keeps separate `head_groups` and
`query_heads` axes for speed; `HookPoint.to_user` / `HookPoint.from_user`
convert between the two layouts.

Hook points inside a `LayerStack`: the stack runs one prototype layer for
every block, so one `HookPoint` stands for all of them. Its `name` holds the
placeholder `{layer}` (`"blocks.{layer}.attn.z"`), `layers` lists the block
index of each stack slice, and its `layer_index` field is an int32
NamedArray over the stack axis holding those indices. The stack slices it
like every stacked array, so a layer placed next to the hook point (an
intervention, a recorder) that reads `hook.current_layer()` while the stack
runs gets the traced 0-d index of the block being run, and can act only in
block 3 with `jnp.where(index == 3, new, old)`. A layer placed beside a hook
point should hold a copy of `hook.layer_index` (an array field sliced the same
way; `.unwrap()` gives the index while the stack runs), not the `HookPoint`
itself: every `HookPoint` in a model counts as a hook point. Outside a
stack, `current_layer()` is the int in the name and `layer_index` is None.
"""

from saikei.interp import head_scores as head_scores
from saikei.interp._cache import ActivationCache as ActivationCache
from saikei.interp._interventions import Ablate as Ablate
from saikei.interp._interventions import Add as Add
from saikei.interp._interventions import Hook as Hook
from saikei.interp._interventions import Intervention as Intervention
from saikei.interp._interventions import Replace as Replace
from saikei.interp._interventions import Scale as Scale
from saikei.interp._interventions import intervene as intervene
from saikei.interp._interventions import interventions as interventions
from saikei.interp._interventions import remove_interventions as remove_interventions
from saikei.interp._logit_attrs import logit_attrs as logit_attrs
from saikei.interp._metrics import LogitDiff as LogitDiff
from saikei.interp._metrics import logit_diff as logit_diff
from saikei.interp._patching import activation_patch as activation_patch
from saikei.interp._patching import attribution_patch as attribution_patch
from saikei.interp._patching import path_patch as path_patch
from saikei.interp._run_with_cache import run_with_cache as run_with_cache
from saikei.interp._weights import ModelWeights as ModelWeights
from saikei.interp._weights import weights as weights
from saikei.models.transformer._hook_points import HookPoint as HookPoint
from saikei.models.transformer._hook_points import hook_names as hook_names
from saikei.models.transformer._hook_points import with_hook_points as with_hook_points
