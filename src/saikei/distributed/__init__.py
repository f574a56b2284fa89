"""saikei.distributed: run saikei on several processes with JAX's own multi-process runtime.

Every process calls `initialize()` first; `python -m saikei.launch -n N script.py`
starts N local processes that find each other through it. Meshes, sharded loading,
training and checkpoints across processes are in `saikei.toolshed.sharding_util`,
`saikei.models.transformer.load_pretrained(..., mesh=)`,
`saikei.toolshed.basic_training` and `saikei.toolshed.checkpointing`; see
docs/distributed.md.

Example:
  >>> from saikei import distributed
  >>> distributed.cluster_settings({})
  {}
"""

from saikei.distributed._initialize import cluster_settings as cluster_settings
from saikei.distributed._initialize import initialize as initialize
from saikei.distributed._launch import free_port as free_port
from saikei.distributed._launch import launch as launch
from saikei.distributed._launch import main as main

__all__ = ["cluster_settings", "free_port", "initialize", "launch", "main"]
