"""Core data-model operations, saikei against penzai 0.2.5 in one process.

Cases (each side builds a structurally identical input from its own types):

- selectors: `select(tree).at_instances_of(Leafish).apply(fn)` on a tree of
  10,001 Structs (a root holding 100 branches of 99 leaves each).
- nmap, jitted: one call of `jax.jit(nx.nmap(jnp.dot))` on NamedArrays with
  named axes {batch: 4, seq: 8} and a positional contraction axis of 16; this
  is dispatch cost (flattening, cache lookup, unflattening), not arithmetic.
- nmap, eager: `nx.nmap(jnp.add)(x, y)` with x {batch: 4, seq: 8} and y {seq: 8}
  broadcast by name, outside jit.
- nmap MLP chain, jitted: 8 residual blocks `x + nmap(dot)(relu(nmap(dot)(x, w) + b), w2)`
  on {batch: 32, f: 128} with a hidden axis h of 512, under one `jax.jit`; this
  is the compiled program's speed, which depends on the memory layout nmap
  gives its outputs (a transposed layout makes XLA copy or pick slow kernels).
- variables: `unbind_variables` then `bind_variables` on a model holding 1,000
  Parameters.

Run alone with `python benchmarks/bench_core.py [--quick]`, or with every other
bench via `python benchmarks/run.py`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import _harness  # first: pins XLA threads before jax starts
from _harness import check as _check

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

N_BRANCHES = 100
LEAVES_PER_BRANCH = 99
N_PARAMETERS = 1_000
MLP_BLOCKS = 8


def _selector_case(lib: ModuleType) -> Callable[[], Any]:
    @lib.pytree_dataclass
    class Leafish(lib.Struct):
        value: int

    @lib.pytree_dataclass
    class Branch(lib.Struct):
        children: list

    tree = Branch(
        children=[
            Branch(children=[Leafish(value=b * 1000 + i) for i in range(LEAVES_PER_BRANCH)])
            for b in range(N_BRANCHES)
        ]
    )

    def bump(leaf: Any) -> Any:
        return Leafish(value=leaf.value + 1)

    def step() -> Any:
        return lib.select(tree).at_instances_of(Leafish).apply(bump)

    out = step()
    _check(out.children[7].children[5] == Leafish(value=7006), "apply bumped each leaf")
    _check(len(out.children) == N_BRANCHES, "apply kept the tree's shape")
    return step


def _nmap_jit_case(lib: ModuleType) -> Callable[[], Any]:
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(4, 8, 16)).astype(np.float32)
    w_np = rng.normal(size=(16, 32)).astype(np.float32)
    x = lib.nx.wrap(jnp.asarray(x_np), "batch", "seq", "k").untag("k")
    w = lib.nx.wrap(jnp.asarray(w_np))
    dot = jax.jit(lib.nx.nmap(jnp.dot))

    def step() -> Any:
        return jax.block_until_ready(dot(x, w))

    out = step()
    _check(dict(out.named_shape) == {"batch": 4, "seq": 8}, "named axes of jitted nmap(dot)")
    _check(tuple(out.positional_shape) == (32,), "positional shape of jitted nmap(dot)")
    expected = np.einsum("bsk,kn->bsn", x_np, w_np)
    got = np.asarray(out.tag("n").unwrap("batch", "seq", "n"))
    _check(np.allclose(got, expected, atol=1e-4), "values of jitted nmap(dot)")
    return step


def _nmap_eager_case(lib: ModuleType) -> Callable[[], Any]:
    rng = np.random.default_rng(1)
    x = lib.nx.wrap(jnp.asarray(rng.normal(size=(4, 8)), jnp.float32), "batch", "seq")
    y = lib.nx.wrap(jnp.asarray(rng.normal(size=(8,)), jnp.float32), "seq")
    add = lib.nx.nmap(jnp.add)

    def step() -> Any:
        return jax.block_until_ready(add(x, y))

    out = step()
    expected = np.asarray(x.unwrap("batch", "seq")) + np.asarray(y.unwrap("seq"))[None, :]
    _check(np.allclose(np.asarray(out.unwrap("batch", "seq")), expected), "values of nmap(add)")
    return step


def _mlp_chain_case(lib: ModuleType) -> Callable[[], Any]:
    rng = np.random.default_rng(2)
    x_np = rng.normal(size=(32, 128)).astype(np.float32)
    w_np = (rng.normal(size=(128, 512)) / np.sqrt(128)).astype(np.float32)
    b_np = rng.normal(size=(512,)).astype(np.float32)
    w2_np = (rng.normal(size=(512, 128)) / np.sqrt(512)).astype(np.float32)
    nx = lib.nx
    x = nx.wrap(jnp.asarray(x_np), "batch", "f")
    w = nx.wrap(jnp.asarray(w_np), "f", "h")
    b = nx.wrap(jnp.asarray(b_np), "h")
    w2 = nx.wrap(jnp.asarray(w2_np), "h", "f")

    def chain(x: Any, w: Any, b: Any, w2: Any) -> Any:
        for _ in range(MLP_BLOCKS):
            h = nx.nmap(jnp.dot)(x.untag("f"), w.untag("f", "h")).tag("h") + b
            h = nx.nmap(jax.nn.relu)(h)
            x = nx.nmap(jnp.dot)(h.untag("h"), w2.untag("h", "f")).tag("f") + x
        return x

    compiled = jax.jit(chain)

    def step() -> Any:
        return jax.block_until_ready(compiled(x, w, b, w2))

    out = step()
    expected = x_np.astype(np.float64)
    for _ in range(MLP_BLOCKS):
        hidden = np.maximum(expected @ w_np + b_np, 0.0)
        expected = hidden @ w2_np + expected
    got = np.asarray(out.unwrap("batch", "f"))
    scale = np.abs(expected).max()
    _check(np.allclose(got, expected, rtol=1e-3, atol=1e-3 * scale), "values of the MLP chain")
    return step


def _variables_case(lib: ModuleType) -> Callable[[], Any]:
    @lib.pytree_dataclass
    class Holder(lib.Struct):
        weight: Any

    @lib.pytree_dataclass
    class Model(lib.Struct):
        layers: list

    model = Model(
        layers=[
            Holder(weight=lib.Parameter(label=f"layer{i}.weight", value=jnp.full((2,), float(i))))
            for i in range(N_PARAMETERS)
        ]
    )

    def step() -> Any:
        slots, variables = lib.unbind_variables(model)
        return lib.bind_variables(slots, variables)

    slots, variables = lib.unbind_variables(model)
    _check(len(variables) == N_PARAMETERS, "unbind found every Parameter")
    _check(not isinstance(slots.layers[3].weight, lib.Parameter), "unbind left slots")
    rebound = step()
    _check(rebound.layers[7].weight is model.layers[7].weight, "bind put the Parameters back")
    return step


def run() -> list[_harness.Result]:
    """Measures every core case; see the module docstring."""
    cases = [
        (
            "select.at_instances_of.apply (10,001 Structs)",
            _selector_case,
            "tree of 100 branches x 99 leaf Structs; fn rebuilds each leaf",
        ),
        (
            "jit(nmap(jnp.dot)) call (batch:4, seq:8; k=16 -> 32)",
            _nmap_jit_case,
            "per-call dispatch of a compiled function on NamedArray(View) inputs",
        ),
        (
            "eager nmap(jnp.add) (batch:4, seq:8 + seq:8)",
            _nmap_eager_case,
            "outside jit: each call vectorizes over the names and dispatches eagerly",
        ),
        (
            "jit(8 nmap MLP blocks) (batch:32, f:128 -> h:512 -> f)",
            _mlp_chain_case,
            "compiled residual MLP chain written with nmap(jnp.dot); layout-sensitive",
        ),
        (
            "unbind_variables + bind_variables (1,000 Parameters)",
            _variables_case,
            "one round trip stateful -> slots + variables -> stateful",
        ),
    ]
    return _harness.compare_namespace_cases(cases)


if __name__ == "__main__":
    sys.exit(_harness.main_single(run))
