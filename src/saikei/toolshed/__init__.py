"""saikei.toolshed: tools built on saikei's core and layers (import the submodules you need).

Submodules:
  save_intermediates: layers that record activations (`SaveIntermediate`,
    `saving_all_intermediates`).
  isolate_submodel: `call_and_extract_submodel`, replaying one layer's calls bit for bit.
  jit_wrapper: `Jitted`, a layer compiled with `sk.variable_jit`.
  gradient_checkpointing: `Checkpointed`, rematerialization that threads state variables.
  auto_nmap: `wrap_module(jax.numpy)`, a module whose functions are `nmap`-ed.
  model_rewiring: head knockout, parallel-world path patching, linearization.
  lora: low-rank adapters (`LowRankAdapter`, `loraify_linears_in_selection`).
  basic_training: `StatefulTrainer`, a small optax training loop over Parameters.
  checkpointing: save and restore a model's variables by label (safetensors, no pickles).
  sharding_util: shard models by axis name over a `jax.sharding.Mesh`.
  unflaxify: turn a `flax.linen` module into a patchable saikei layer tree.
  patch_ipdb: treescope rendering in the IPython debugger.
  token_visualization: show token arrays and per-token scores.
"""
