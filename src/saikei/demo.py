"""The saikei demo: build a small model from core types, run it, patch it, render it.

Run it with `python -m saikei.demo` (or `bash scripts/demo.sh --toy`). It builds a
two-layer MLP out of custom `sk.Struct` layers whose weights are
`sk.Parameter`s holding `sk.nx` NamedArrays, runs it on a NamedArray input,
rewrites it with selectors (inserting an activation-capturing layer, then
halving the output weights), checks what each rewrite did to the output, prints
the patched model's rendering and writes it as HTML to `--out`
(default `out/demo.html`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import treescope

from saikei import sk

_STATIC = {"pytree_node": False}


@sk.pytree_dataclass
class Linear(sk.Struct):
    """Contracts the named axis `in_axis` against a weight matrix, producing `out_axis`.

    Attributes:
      weights: A Parameter whose value is a NamedArray with axes `in_axis` and
        `out_axis`.
      in_axis: The input axis name the layer consumes.
      out_axis: The output axis name the layer produces.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.demo import Linear
      >>> layer = Linear.from_config("proj", jax.random.key(0), "features", 4, "hidden", 8)
      >>> layer(sk.nx.ones({"batch": 2, "features": 4})).named_shape == {"batch": 2, "hidden": 8}
      True
    """

    weights: Any
    in_axis: str = dataclasses.field(metadata=_STATIC)
    out_axis: str = dataclasses.field(metadata=_STATIC)

    @classmethod
    def from_config(
        cls, name: str, key: jax.Array, in_axis: str, in_size: int, out_axis: str, out_size: int
    ) -> Linear:
        """Builds a layer with scaled-normal weights labelled `{name}.weights`.

        Args:
          name: Prefix of the weight parameter's label.
          key: PRNG key for the initial weights.
          in_axis: Name of the input axis.
          in_size: Size of the input axis.
          out_axis: Name of the output axis.
          out_size: Size of the output axis.

        Returns:
          A new `Linear` layer.

        Example:
          >>> import jax
          >>> from saikei.demo import Linear
          >>> Linear.from_config("proj", jax.random.key(0), "a", 2, "b", 3).weights.label
          'proj.weights'
        """
        values = jax.random.normal(key, (in_size, out_size)) / np.sqrt(in_size)
        weights = sk.Parameter(label=f"{name}.weights", value=sk.nx.wrap(values, in_axis, out_axis))
        return cls(weights=weights, in_axis=in_axis, out_axis=out_axis)

    def __call__(self, x: Any) -> Any:
        """Applies the layer to a NamedArray that has an `in_axis` axis."""
        weights = self.weights.value.untag(self.in_axis, self.out_axis)
        return sk.nx.nmap(jnp.dot)(x.untag(self.in_axis), weights).tag(self.out_axis)


@sk.pytree_dataclass
class AddBias(sk.Struct):
    """Adds a learned bias, broadcast by axis name.

    Example:
      >>> from saikei import sk
      >>> from saikei.demo import AddBias
      >>> bias = sk.Parameter(label="b", value=sk.nx.ones({"hidden": 2}))
      >>> AddBias(bias)(sk.nx.zeros({"batch": 1, "hidden": 2})).named_shape == {
      ...     "batch": 1, "hidden": 2}
      True
    """

    bias: Any

    def __call__(self, x: Any) -> Any:
        """Returns `x + bias`."""
        return x + self.bias.value


@sk.pytree_dataclass
class Relu(sk.Struct):
    """The elementwise rectified linear unit.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.demo import Relu
      >>> Relu()(sk.nx.wrap(jnp.array([-1.0, 2.0]), "a")).unwrap("a").tolist()
      [0.0, 2.0]
    """

    def __call__(self, x: Any) -> Any:
        """Returns `max(x, 0)` elementwise."""
        return sk.nx.nmap(jax.nn.relu)(x)


@sk.pytree_dataclass
class SaveActivation(sk.Struct):
    """Passes its input through unchanged and stores it in a StateVariable.

    Example:
      >>> from saikei import sk
      >>> from saikei.demo import SaveActivation
      >>> probe = SaveActivation(sk.StateVariable(value=None, label="probe"))
      >>> y = probe(sk.nx.ones({"a": 2}))
      >>> probe.saved.value.named_shape
      {'a': 2}
    """

    saved: Any

    def __call__(self, x: Any) -> Any:
        """Records `x` in `saved` and returns it."""
        self.saved.value = x
        return x


@sk.pytree_dataclass
class MLP(sk.Struct):
    """Runs its layers one after another.

    Example:
      >>> from saikei import sk
      >>> from saikei.demo import MLP, Relu
      >>> MLP(layers=[Relu(), Relu()])(sk.nx.ones({"a": 2})).named_shape
      {'a': 2}
    """

    layers: list

    def __call__(self, x: Any) -> Any:
        """Applies each layer in order."""
        for layer in self.layers:
            x = layer(x)
        return x


def build_mlp(key: jax.Array, features: int = 4, hidden: int = 8) -> MLP:
    """Builds the demo's two-layer MLP, mapping axis `features` to itself via `hidden`.

    Args:
      key: PRNG key for the initial parameters.
      features: Size of the input and output axis `features`.
      hidden: Size of the hidden axis `hidden`.

    Returns:
      `MLP([Linear, AddBias, Relu, Linear])` with parameters labelled
      `mlp.in.weights`, `mlp.in.bias` and `mlp.out.weights`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.demo import build_mlp
      >>> model = build_mlp(jax.random.key(0))
      >>> model(sk.nx.ones({"batch": 3, "features": 4})).named_shape == {
      ...     "batch": 3, "features": 4}
      True
    """
    in_key, out_key = jax.random.split(key)
    bias = sk.Parameter(label="mlp.in.bias", value=sk.nx.zeros({"hidden": hidden}))
    return MLP(
        layers=[
            Linear.from_config("mlp.in", in_key, "features", features, "hidden", hidden),
            AddBias(bias),
            Relu(),
            Linear.from_config("mlp.out", out_key, "hidden", hidden, "features", features),
        ]
    )


_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>saikei demo: the patched MLP</title></head>
<body>
<h1>saikei demo: the patched MLP</h1>
<p>Click a node to fold or unfold it.</p>
{body}
</body>
</html>
"""


def _describe(array: Any) -> str:
    if array is None:
        return "(nothing)"
    axes = sorted(array.named_shape.items())
    return "{" + ", ".join(f"{name}:{size}" for name, size in axes) + "}"


def _values(array: Any) -> np.ndarray:
    return np.asarray(array.unwrap(*sorted(array.named_shape)))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo and returns its exit status (0 when every check holds).

    Args:
      argv: Command-line arguments (default: `sys.argv[1:]`). `--out PATH`
        sets where the HTML rendering goes; `--seed N` the PRNG seed.

    Returns:
      0 if every rewrite had the expected effect on the output, 1 otherwise.

    Example:
      >>> import pathlib, tempfile
      >>> from saikei.demo import main
      >>> out = pathlib.Path(tempfile.mkdtemp()) / "demo.html"
      >>> main(["--out", str(out), "--quiet"]), out.exists()
      (0, True)
    """
    parser = argparse.ArgumentParser(prog="python -m saikei.demo", description=__doc__)
    parser.add_argument("--out", default="out/demo.html", help="where to write the HTML rendering")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for weights and input")
    parser.add_argument("--quiet", action="store_true", help="print nothing, only write --out")
    args = parser.parse_args(argv)
    say = (lambda *_: None) if args.quiet else print

    model_key, input_key = jax.random.split(jax.random.key(args.seed))
    model = build_mlp(model_key)
    _, params = sk.unbind_params(model)
    n_values = sum(math.prod(p.value.named_shape.values()) for p in params)
    say("saikei demo")
    say(f"  built an MLP of {len(model.layers)} layers with {len(params)} parameters")
    say(f"    ({', '.join(p.label for p in params)}; {n_values} values in all)")

    x = sk.nx.wrap(jax.random.normal(input_key, (3, 4)), "batch", "features")
    y = model(x)
    say(f"  ran it on x{_describe(x)} -> y{_describe(y)}")

    # Probing: insert a layer after the nonlinearity; the output must not move.
    probe = SaveActivation(sk.StateVariable(value=None, label="hidden_activation"))
    probed = sk.select(model).at_instances_of(Relu).insert_after(probe)
    y_probed = probed(x)
    unchanged = bool(np.allclose(_values(y_probed), _values(y)))
    captured = probe.saved.value
    say(
        "  inserted SaveActivation after Relu: select(model).at_instances_of(Relu).insert_after(...)"
    )
    say(f"    output unchanged: {unchanged}; captured hidden activation {_describe(captured)}")

    # Rewriting weights: the last layer is linear with no bias after it, so
    # halving its weights must halve the output exactly.
    halved = (
        sk.select(probed)
        .at_instances_of(sk.Parameter)
        .where(lambda p: p.label == "mlp.out.weights")
        .apply(lambda p: sk.Parameter(label=p.label, value=p.value * 0.5))
    )
    y_halved = halved(x)
    is_half = bool(np.allclose(_values(y_halved), 0.5 * _values(y), atol=1e-6))
    say("  halved mlp.out.weights: select(...).at_instances_of(Parameter).where(...).apply(...)")
    say(f"    output halved: {is_half}")

    say("  rendering of the patched model:")
    for line in treescope.render_to_text(halved).splitlines():
        say("    " + line)

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Uncompressed so the layer names can be found in the file as plain text.
    body = treescope.render_to_html(halved, compressed=False)
    out.write_text(_HTML_PAGE.format(body=body), encoding="utf-8")
    say(f"  wrote the HTML rendering to {out} ({out.stat().st_size:,} bytes)")

    if not (unchanged and captured is not None and is_half):
        print("demo: a rewrite did not have the expected effect", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
