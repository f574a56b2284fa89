"""auto_nmap.wrap_module: wrapped functions act like nmap-ped ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed.auto_nmap import wrap_module


def _x():
    data = np.asarray(jax.random.normal(jax.random.key(0), (2, 5)))
    return data, sk.nx.wrap(jnp.asarray(data)).tag("batch", "features")


def test_function_maps_over_named_axes():
    data, x = _x()
    njnp = wrap_module(jnp)
    out = njnp.cumsum(x.untag("features"))
    np.testing.assert_allclose(
        np.asarray(out.tag("features").unwrap("batch", "features")),
        np.cumsum(data, axis=1),
        rtol=1e-6,
    )


def test_submodules_are_wrapped_recursively():
    data, x = _x()
    njax = wrap_module(jax)
    values, _ = njax.lax.top_k(x.untag("features"), 2)
    np.testing.assert_allclose(
        np.asarray(values.tag("k").unwrap("batch", "k")), -np.sort(-data, axis=1)[:, :2], rtol=1e-6
    )
    norms = wrap_module(jnp).linalg.norm(x.untag("features"))
    np.testing.assert_allclose(
        np.asarray(norms.unwrap("batch")), np.linalg.norm(data, axis=1), rtol=1e-6
    )


def test_constructors_build_arrays_to_tag():
    njnp = wrap_module(jnp)
    arr = njnp.arange(3).tag("i")
    assert arr.named_shape == {"i": 3}


def test_constants_and_dtypes_pass_through():
    njnp = wrap_module(jnp)
    assert njnp.pi == jnp.pi
    assert njnp.float32 is jnp.float32
    assert "sum" in dir(njnp)


def test_missing_attribute_and_non_module_are_errors():
    with pytest.raises(AttributeError, match="no_such_function"):
        _ = wrap_module(jnp).no_such_function
    with pytest.raises(TypeError, match="expected a module"):
        wrap_module(jnp.sum)
