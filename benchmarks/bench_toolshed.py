"""Toolshed: jit wrapper, trainer, submodel isolation, LoRA and unflaxify, against penzai 0.2.5.

Models:

- a small llama-like transformer, built by each library's own
  `llamalike_common.build_llamalike_transformer` (d_model 128, 4 blocks of
  4 heads of width 32, SwiGLU 512, vocabulary 512, float32) with parameter
  slots, then bound to the same weights on both sides (saikei's random
  initialisation, copied across by parameter label); its input is a batch of
  4 sequences of 64 random tokens;
- a flax.linen residual MLP (4 blocks `x + Dense(256)(relu(Dense(1024)(x)))`)
  on a batch of 64, for `unflaxify`.

Cases (saikei's toolshed module against penzai's module of the same name):

- Jitted call: `jit_wrapper.Jitted(model)(tokens)`, steady state (the
  compiled program plus the per-call unbinding and rebinding of the model's
  Parameters done by `variable_jit`).
- trainer step: one `basic_training.StatefulTrainer.step` with
  `optax.adam(1e-3)` on the mean next-token cross-entropy (jitted step,
  parameters written back in place).
- call_and_extract_submodel: one eager call of the whole model recording the
  third block's attention layer (`isolate_submodel`).
- LoRA call: the model after `lora.loraify_linears_in_selection` (rank 8,
  every Linear inside the attention layers), wrapped in `Jitted` and called.
- unflaxify call: `unflaxify.unflaxify_apply` of the flax MLP, wrapped in
  `Jitted` and called on `ArgsAndKwargs.capture(x)`.

Target for every case: <= 1.0x penzai. Each factory checks its result before
it is timed: forward outputs against the other library's plain (unjitted)
call on the same weights, the trainer's first three losses against the other
library's, the isolated call's replay against its saved output and that
output against the other library's, and the unflaxified call against
`module.apply`.

Run alone with `python benchmarks/bench_toolshed.py [--quick]`, or with every
other bench via `python benchmarks/run.py`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import _harness  # first: pins XLA threads before jax starts
from _harness import check as _check
from _harness import penzai_namespace as _penzai
from _harness import saikei_namespace as _saikei

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

CONFIG = dict(
    num_kv_heads=4,
    query_head_multiplier=1,
    embedding_dim=128,
    projection_dim=32,
    mlp_hidden_dim=512,
    num_decoder_blocks=4,
    vocab_size=512,
    mlp_variant="swiglu",
    tie_embedder_and_logits=False,
)
BATCH = 4
SEQ = 64
LORA_RANK = 8
ISOLATED_BLOCK = 2
FLAX_BLOCKS = 4
FLAX_FEATURES = 256
FLAX_HIDDEN = 1024
FLAX_BATCH = 64


def _lib(which: str) -> ModuleType:
    return _saikei() if which == "saikei" else _penzai()


def _which(lib: ModuleType) -> str:
    return lib.__name__.split(".")[0]


def _other(lib: ModuleType) -> str:
    return "penzai" if _which(lib) == "saikei" else "saikei"


def _module(lib: ModuleType, path: str) -> ModuleType:
    """`saikei.<path>` or `penzai.<path>`, whichever library `lib` belongs to."""
    return importlib.import_module(f"{_which(lib)}.{path}")


def _close(got: Any, expected: Any, what: str, tol: float = 1e-4) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    _check(got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}")
    _check(np.allclose(got, expected, atol=tol * scale, rtol=tol), what)


@functools.cache
def _shared_weights() -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Every parameter of saikei's randomly initialised transformer: label -> (axes, values)."""
    lm = _module(_saikei(), "models.transformer.variants.llamalike_common")
    model = lm.build_llamalike_transformer(
        lm.LlamalikeTransformerConfig(**CONFIG), jax.random.key(0)
    )
    weights = {}
    for param in _saikei().unbind_params(model)[1]:
        names = tuple(param.value.named_shape)
        weights[param.label] = (names, np.asarray(param.value.unwrap(*names)))
    return weights


def _transformer(lib: ModuleType) -> Any:
    """The library's own transformer, with slots bound to the shared weights."""
    lm = _module(lib, "models.transformer.variants.llamalike_common")
    slotted = lm.build_llamalike_transformer(lm.LlamalikeTransformerConfig(**CONFIG), None)
    params = [
        lib.Parameter(label=label, value=lib.nx.wrap(jnp.asarray(values), *names))
        for label, (names, values) in _shared_weights().items()
    ]
    return lib.bind_variables(slotted, params)


def _tokens_np(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], (BATCH, SEQ))


def _tokens(lib: ModuleType, seed: int = 0) -> Any:
    return lib.nx.wrap(jnp.asarray(_tokens_np(seed), jnp.int32), "batch", "seq")


def _logits(out: Any) -> np.ndarray:
    return np.asarray(out.unwrap("batch", "seq", "vocabulary"))


@functools.cache
def _plain_logits(which: str) -> np.ndarray:
    """The library's transformer called eagerly, no toolshed involved."""
    lib = _lib(which)
    return _logits(_transformer(lib)(_tokens(lib)))


def _jitted_case(lib: ModuleType) -> Callable[[], Any]:
    jitted = _module(lib, "toolshed.jit_wrapper").Jitted(_transformer(lib))
    tokens = _tokens(lib)

    def step() -> Any:
        return jax.block_until_ready(jitted(tokens))

    _close(_logits(step()), _plain_logits(_other(lib)), "Jitted logits match the other library")
    return step


def _next_token_loss(model: Any, state: Any, rng: Any, tokens: Any, targets: Any) -> Any:
    del rng
    log_probs = jax.nn.log_softmax(model(tokens).unwrap("batch", "seq", "vocabulary"))
    picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)
    loss = -jnp.mean(picked)
    return loss, state, {"loss": loss}


def _trainer(lib: ModuleType) -> tuple[Any, dict[str, Any]]:
    import optax

    training = _module(lib, "toolshed.basic_training")
    trainer = training.StatefulTrainer.build(
        root_rng=jax.random.key(0),
        model=_transformer(lib),
        optimizer_def=optax.adam(1e-3),
        loss_fn=_next_token_loss,
    )
    tokens_np = _tokens_np(1)
    batch = {
        "tokens": lib.nx.wrap(jnp.asarray(tokens_np, jnp.int32), "batch", "seq"),
        "targets": jnp.asarray(np.roll(tokens_np, -1, axis=1), jnp.int32),
    }
    return trainer, batch


@functools.cache
def _first_losses(which: str) -> tuple[float, ...]:
    trainer, batch = _trainer(_lib(which))
    return tuple(float(trainer.step(**batch)["loss"]) for _ in range(3))


def _trainer_case(lib: ModuleType) -> Callable[[], Any]:
    mine, theirs = _first_losses(_which(lib)), _first_losses(_other(lib))
    _check(mine[2] < mine[0], f"{_which(lib)} adam steps lower the loss: {mine}")
    _close(mine, theirs, f"first three losses match the other library ({mine} vs {theirs})")
    trainer, batch = _trainer(lib)

    def step() -> Any:
        return jax.block_until_ready(trainer.step(**batch))

    return step


def _isolate(lib: ModuleType) -> tuple[Callable[[], Any], Any]:
    isolate = _module(lib, "toolshed.isolate_submodel")
    model = _transformer(lib)
    selection = (
        lib.select(model).at_instances_of(lib.nn.Attention).pick_nth_selected(ISOLATED_BLOCK)
    )
    tokens = _tokens(lib)

    def step() -> Any:
        return jax.block_until_ready(isolate.call_and_extract_submodel(selection, tokens))

    return step, step()


@functools.cache
def _isolated_output(which: str) -> np.ndarray:
    out = _isolate(_lib(which))[1].saved_output
    return np.asarray(out.unwrap("batch", "seq", "embedding"))


def _isolate_case(lib: ModuleType) -> Callable[[], Any]:
    step, isolated = _isolate(lib)
    replayed, _ = isolated.submodel.stateless_call(
        isolated.initial_var_values, isolated.saved_arg, **isolated.saved_side_inputs
    )
    saved = np.asarray(isolated.saved_output.unwrap("batch", "seq", "embedding"))
    _close(replayed.unwrap("batch", "seq", "embedding"), saved, "replay equals the saved output")
    _close(saved, _isolated_output(_other(lib)), "isolated output matches the other library")
    return step


def _lora_case(lib: ModuleType) -> Callable[[], Any]:
    lora = _module(lib, "toolshed.lora")
    model = _transformer(lib)
    adapted = lora.loraify_linears_in_selection(
        lib.select(model).at_instances_of(lib.nn.Attention),
        rank=LORA_RANK,
        init_base_rng=jax.random.key(1),
    )
    n_params = len(lib.unbind_params(adapted)[1])
    # 4 projections per attention layer, each gaining an A and a B matrix.
    expected = len(_shared_weights()) + 2 * 4 * CONFIG["num_decoder_blocks"]
    _check(n_params == expected, f"LoRA added its adapters ({n_params} != {expected})")
    jitted = _module(lib, "toolshed.jit_wrapper").Jitted(adapted)
    tokens = _tokens(lib)

    def step() -> Any:
        return jax.block_until_ready(jitted(tokens))

    # B starts at zero, so the adapted model computes what the original does.
    _close(_logits(step()), _plain_logits(_other(lib)), "LoRA logits match the other library")
    return step


@functools.cache
def _flax_mlp() -> tuple[Any, Any, np.ndarray]:
    import flax.linen as fnn

    class ResidualMLP(fnn.Module):
        @fnn.compact
        def __call__(self, x: Any) -> Any:
            for _ in range(FLAX_BLOCKS):
                x = x + fnn.Dense(FLAX_FEATURES)(jax.nn.relu(fnn.Dense(FLAX_HIDDEN)(x)))
            return x

    x = np.random.default_rng(2).normal(size=(FLAX_BATCH, FLAX_FEATURES)).astype(np.float32)
    module = ResidualMLP()
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    return module, variables, x


def _unflaxify_case(lib: ModuleType) -> Callable[[], Any]:
    unflaxify = _module(lib, "toolshed.unflaxify")
    module, variables, x_np = _flax_mlp()
    x = jnp.asarray(x_np)
    layer = unflaxify.unflaxify_apply(module, variables, x)
    jitted = _module(lib, "toolshed.jit_wrapper").Jitted(layer)
    argument = unflaxify.ArgsAndKwargs.capture(x)

    def step() -> Any:
        return jax.block_until_ready(jitted(argument))

    _close(step(), module.apply(variables, x), "unflaxified call matches module.apply")
    return step


def run() -> list[_harness.Result]:
    """Measures every toolshed case; see the module docstring."""
    shape = (
        f"llama-like d{CONFIG['embedding_dim']} x{CONFIG['num_decoder_blocks']},"
        f" tokens {BATCH}x{SEQ}"
    )
    cases = [
        (
            f"Jitted call ({shape})",
            _jitted_case,
            "compiled forward plus per-call variable unbind/rebind by variable_jit",
        ),
        (
            f"StatefulTrainer step, adam ({shape})",
            _trainer_case,
            "jitted step and in-place write-back; first three losses equal across libraries",
        ),
        (
            f"call_and_extract_submodel, block {ISOLATED_BLOCK} attention ({shape})",
            _isolate_case,
            "one eager (op-by-op) call of the whole model with the recorder inserted;"
            " the gap is mostly the eager forward itself, not the recorder",
        ),
        (
            f"LoRA rank {LORA_RANK} on attention, Jitted call ({shape})",
            _lora_case,
            f"loraify_linears_in_selection on the {4 * CONFIG['num_decoder_blocks']} attention"
            " projections, then Jitted",
        ),
        (
            f"unflaxify_apply, Jitted call (flax MLP {FLAX_BLOCKS}x"
            f" {FLAX_FEATURES}->{FLAX_HIDDEN}, batch {FLAX_BATCH})",
            _unflaxify_case,
            "flax interception replayed inside one compiled call",
        ),
    ]
    return _harness.compare_namespace_cases(cases)


if __name__ == "__main__":
    sys.exit(_harness.main_single(run))
