"""Neural-network layers: a deep residual MLP as a LayerStack and as a plain list.

The model is 32 residual MLP blocks, `x + Linear(relu(Affine(x)))` with
features 128 and hidden width 512, on a batch of 32 (and of 1 for the
memory-bound case). Each library builds it from its own layers
(`nn.Affine`, `nn.Elementwise`, `nn.Linear`, `nn.Residual`), once as
`nn.LayerStack.from_sublayer_builder` (one prototype block with stacked
parameters) and once as an `nn.Sequential` of 32 separately built blocks.
Both are called as `jax.jit(lambda params, x: model.bind_variables(params)(x))`
on frozen parameters.

Cases:

- compile: one fresh trace + lowering + XLA compile per call
  (`jax.jit(new_function).lower(params, x).compile()`; a new function object
  each time, so no JAX cache is hit). penzai 0.2.5 scans its LayerStack with
  `unroll=True`, so XLA compiles all 32 blocks; saikei's scan is rolled and
  compiles one block. Target for the LayerStack: <= 0.25x penzai.
- forward step: one call of the compiled forward pass, blocking on the result.

Each factory checks its model's output against a numpy forward pass computed
from the same parameters before it is timed.

Run alone with `python benchmarks/bench_nn.py [--quick]`, or with every other
bench via `python benchmarks/run.py`.
"""

from __future__ import annotations

import dataclasses
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

BLOCKS = 32
FEATURES = 128
HIDDEN = 512
BATCH = 32
STACK_AXIS = "blocks"


def _block_builder(lib: ModuleType) -> Callable[..., Any]:
    def block(init_base_rng: Any, name: str = "block") -> Any:
        return lib.nn.Residual(
            lib.nn.Sequential(
                [
                    lib.nn.Affine.from_config(
                        name=f"{name}/up",
                        init_base_rng=init_base_rng,
                        input_axes={"features": FEATURES},
                        output_axes={"hidden": HIDDEN},
                    ),
                    lib.nn.Elementwise(jax.nn.relu),
                    lib.nn.Linear.from_config(
                        name=f"{name}/down",
                        init_base_rng=init_base_rng,
                        input_axes={"hidden": HIDDEN},
                        output_axes={"features": FEATURES},
                    ),
                ]
            )
        )

    return block


def _build(lib: ModuleType, kind: str) -> Any:
    block = _block_builder(lib)
    if kind == "stack":
        return lib.nn.LayerStack.from_sublayer_builder(
            block, STACK_AXIS, BLOCKS, jax.random.key(0), {}
        )
    return lib.nn.Sequential([block(jax.random.key(i), name=f"b{i}") for i in range(BLOCKS)])


def _numpy_weights(lib: ModuleType, model: Any, kind: str) -> list[tuple[np.ndarray, ...]]:
    """Per block (up weights, up bias, down weights) as numpy arrays."""
    values = {p.label: p.value for p in lib.unbind_params(model)[1]}

    def get(label: str, *names: str) -> np.ndarray:
        return np.asarray(values[label].unwrap(*names))

    if kind == "stack":
        up = get("block/up/Linear.weights", STACK_AXIS, "features", "hidden")
        bias = get("block/up/AddBias.bias", STACK_AXIS, "hidden")
        down = get("block/down.weights", STACK_AXIS, "hidden", "features")
        return [(up[i], bias[i], down[i]) for i in range(BLOCKS)]
    return [
        (
            get(f"b{i}/up/Linear.weights", "features", "hidden"),
            get(f"b{i}/up/AddBias.bias", "hidden"),
            get(f"b{i}/down.weights", "hidden", "features"),
        )
        for i in range(BLOCKS)
    ]


def _numpy_forward(x: np.ndarray, weights: list[tuple[np.ndarray, ...]]) -> np.ndarray:
    x = x.astype(np.float64)
    for up, bias, down in weights:
        x = x + np.maximum(x @ up + bias, 0.0) @ down
    return x


def _inputs(lib: ModuleType, model: Any, batch: int) -> tuple[Any, Any, Any, np.ndarray]:
    x_np = np.random.default_rng(0).normal(size=(batch, FEATURES)).astype(np.float32)
    x = lib.nx.wrap(jnp.asarray(x_np), "batch", "features")
    unbound, params = lib.unbind_params(model, freeze=True)
    return unbound, params, x, x_np


def _forward_fn(unbound: Any) -> Callable[[Any, Any], Any]:
    # A new function object per call, so jax.jit finds nothing in its caches.
    def forward(params: Any, x: Any) -> Any:
        return unbound.bind_variables(params)(x)

    return forward


def _checked(lib: ModuleType, model: Any, kind: str, out: Any, x_np: np.ndarray) -> None:
    got = np.asarray(out.unwrap("batch", "features"))
    expected = _numpy_forward(x_np, _numpy_weights(lib, model, kind))
    scale = max(1.0, float(np.abs(expected).max()))
    _check(
        np.allclose(got, expected, atol=1e-4 * scale, rtol=1e-4),
        f"{lib.__name__} {kind} output matches numpy",
    )


def _compile_case(lib: ModuleType, kind: str) -> Callable[[], Any]:
    model = _build(lib, kind)
    unbound, params, x, x_np = _inputs(lib, model, BATCH)

    def step() -> Any:
        return jax.jit(_forward_fn(unbound)).lower(params, x).compile()

    _checked(lib, model, kind, step()(params, x), x_np)
    return step


def _step_case(lib: ModuleType, kind: str, batch: int) -> Callable[[], Any]:
    model = _build(lib, kind)
    unbound, params, x, x_np = _inputs(lib, model, batch)
    forward = jax.jit(_forward_fn(unbound))

    def step() -> Any:
        return jax.block_until_ready(forward(params, x))

    _checked(lib, model, kind, step(), x_np)
    return step


def run() -> list[_harness.Result]:
    """Measures every nn case; see the module docstring."""
    shape = f"{BLOCKS} blocks, {FEATURES}->{HIDDEN}->{FEATURES}"
    cases = [
        (
            f"LayerStack compile ({shape})",
            lambda lib: _compile_case(lib, "stack"),
            0.25,
            "trace + lower + XLA compile; penzai's scan is fully unrolled, saikei's is rolled",
        ),
        (
            f"LayerStack forward step ({shape}, batch {BATCH})",
            lambda lib: _step_case(lib, "stack", BATCH),
            1.0,
            "compiled forward pass, parameters passed in as frozen values",
        ),
        (
            f"LayerStack forward step ({shape}, batch 1)",
            lambda lib: _step_case(lib, "stack", 1),
            1.0,
            "memory-bound: dominated by reading (and slicing) the stacked weights",
        ),
        (
            f"plain list compile ({shape})",
            lambda lib: _compile_case(lib, "plain"),
            1.0,
            "Sequential of 32 separately built blocks (separate parameters, no stacking)",
        ),
        (
            f"plain list forward step ({shape}, batch {BATCH})",
            lambda lib: _step_case(lib, "plain", BATCH),
            1.0,
            "same model without stacking",
        ),
        (
            f"plain list forward step ({shape}, batch 1)",
            lambda lib: _step_case(lib, "plain", 1),
            1.0,
            "same model without stacking",
        ),
    ]
    results = []
    for name, factory, target, note in cases:
        result = _harness.compare(
            name,
            saikei=lambda factory=factory: factory(_saikei()),
            peer=lambda factory=factory: factory(_penzai()),
            target_ratio=target,
            note=note,
        )
        print(
            f"  {name}: saikei {_harness.format_seconds(result.saikei_s)}, "
            f"penzai {_harness.format_seconds(result.peer_s)}",
            flush=True,
        )
        results.append(result)
    return _with_stack_vs_plain_notes(results)


def _with_stack_vs_plain_notes(results: list[_harness.Result]) -> list[_harness.Result]:
    """Adds to each LayerStack row how it compares with the plain list, per library."""
    by_name = {r.name: r for r in results}
    out = []
    for result in results:
        plain = by_name.get(result.name.replace("LayerStack", "plain list"))
        if result.name.startswith("LayerStack") and plain is not None:
            ratios = []
            for who, stack_s, plain_s in (
                ("saikei", result.saikei_s, plain.saikei_s),
                ("penzai", result.peer_s, plain.peer_s),
            ):
                if stack_s is not None and plain_s:
                    ratios.append(f"{who} LayerStack/plain list = {stack_s / plain_s:.2f}")
            if ratios:
                result = dataclasses.replace(result, note=f"{result.note}; {'; '.join(ratios)}")
        out.append(result)
    return out


if __name__ == "__main__":
    sys.exit(_harness.main_single(run))
