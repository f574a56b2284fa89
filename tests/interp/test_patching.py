"""Patching grids against loops of single runs patched by hand with selectors."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import interp, sk  # noqa: E402
from saikei.interp import _patching  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from tests.models._hf_helpers import TINY_LLAMA, random_hf_model  # noqa: E402

CLEAN = np.array([[5, 9, 13, 21, 7, 30], [3, 9, 14, 22, 8, 31]])
CORRUPTED = CLEAN.copy()
CORRUPTED[:, 1] = [40, 41]
CORRUPTED[:, 3] = [50, 51]
METRIC = interp.logit_diff(13, 40)


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model(
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(TINY_LLAMA, num_key_value_heads=2),
        sharpen={"q_proj.weight": 4.0, "lm_head.weight": 4.0},
    )


@pytest.fixture(scope="module")
def lm(hf_model):
    return sk.freeze_variables(interp.with_hook_points(_families.from_huggingface_model(hf_model)))


@pytest.fixture(scope="module")
def stacked_lm(hf_model):
    return interp.with_hook_points(_families.from_huggingface_model(hf_model, use_layer_stack=True))


def _tokens(array):
    return sk.nx.wrap(jnp.asarray(array), "batch", "seq")


@sk.pytree_dataclass
class _SetAt(sk.nn.Layer):
    """Hand-built patch: `where(mask, value, x)` with `mask` built from a cell index."""

    value: Any
    mask: Any

    def __call__(self, x, /, **side):
        return sk.nx.nmap(jnp.where)(self.mask, self.value.order_like(x), x)


def _insert_after(model, name, layer):
    return (
        sk.select(model)
        .at_instances_of(interp.HookPoint)
        .where(lambda h: h.name == name)
        .insert_after(layer)
    )


@jax.jit
def _metric_of(model, tokens):
    return METRIC(model(tokens))


def _clean_cache(lm, names):
    return interp.run_with_cache(lm, _tokens(CLEAN), names=names)[1]


def test_residual_grid_equals_a_loop_of_hand_patched_runs(lm, stacked_lm):
    cache = _clean_cache(lm, "resid_pre")
    expected = np.zeros((2, 6))
    for layer in range(2):
        clean = cache[f"blocks.{layer}.resid_pre"]
        for position in range(6):
            mask = sk.nx.wrap(jnp.arange(6) == position, "seq")
            model = _insert_after(lm, f"blocks.{layer}.resid_pre", _SetAt(clean, mask))
            expected[layer, position] = _metric_of(model, _tokens(CORRUPTED))
    for model in (lm, stacked_lm):
        grid = interp.activation_patch(model, _tokens(CLEAN), _tokens(CORRUPTED), METRIC)
        assert grid.named_shape == {"layer": 2, "seq": 6}
        np.testing.assert_allclose(np.asarray(grid.unwrap("layer", "seq")), expected, atol=1e-5)
    # At block 0 the residual is the embedding: equal tokens leave the corrupted metric.
    base = float(_metric_of(lm, _tokens(CORRUPTED)))
    np.testing.assert_allclose(expected[0, [0, 2, 4, 5]], base, atol=1e-5)
    assert abs(expected[0, 1] - base) > 1e-3


def test_head_grid_on_z_follows_hf_head_order(lm, stacked_lm):
    cache = _clean_cache(lm, "attn.z")
    expected = np.zeros((2, 4))
    for layer in range(2):
        clean = cache[f"blocks.{layer}.attn.z"]
        # The model keeps z as head_groups x query_heads: head h is (h // 2, h % 2).
        clean_internal = interp.HookPoint(
            "x", head_axes=(("head_groups", 2), ("query_heads", 2)), user_head_axis="heads"
        ).from_user(clean)
        for head in range(4):
            mask = sk.nx.wrap(jnp.arange(4).reshape(2, 2) == head, "head_groups", "query_heads")
            model = _insert_after(lm, f"blocks.{layer}.attn.z", _SetAt(clean_internal, mask))
            expected[layer, head] = _metric_of(model, _tokens(CORRUPTED))
    # The LayerStack model, in chunks of 3 cells, against the loop on the block list.
    grid = interp.activation_patch(
        stacked_lm,
        _tokens(CLEAN),
        _tokens(CORRUPTED),
        METRIC,
        names="attn.z",
        over=("layer", "heads"),
        batch_size=3,
    )
    np.testing.assert_allclose(np.asarray(grid.unwrap("layer", "heads")), expected, atol=1e-5)


def test_attribution_equals_metric_plus_directional_derivative(lm, stacked_lm):
    names = "resid_pre"
    clean = _clean_cache(lm, names)
    corrupted = interp.run_with_cache(lm, _tokens(CORRUPTED), names=names)[1]
    base = float(_metric_of(lm, _tokens(CORRUPTED)))

    @sk.pytree_dataclass
    class _AddScaled(sk.nn.Layer):
        direction: Any
        t: Any

        def __call__(self, x, /, **side):
            return x + self.t * self.direction.order_like(x)

    expected = np.zeros((2, 6))
    for layer in range(2):
        name = f"blocks.{layer}.resid_pre"
        diff = clean[name] - corrupted[name]
        for position in range(6):
            mask = sk.nx.wrap((jnp.arange(6) == position).astype(jnp.float32), "seq")

            def metric_at(t, diff=diff, mask=mask, name=name):
                model = _insert_after(lm, name, _AddScaled(diff * mask, t))
                return _metric_of(model, _tokens(CORRUPTED))

            _, slope = jax.jvp(metric_at, (jnp.float32(0.0),), (jnp.float32(1.0),))
            expected[layer, position] = base + float(slope)
            if layer == 0 and position == 1:
                eps = 1e-2
                finite = (float(metric_at(jnp.float32(eps))) - base) / eps
                np.testing.assert_allclose(finite, float(slope), rtol=0.05, atol=1e-3)
    for model in (lm, stacked_lm):
        grid = interp.attribution_patch(model, _tokens(CLEAN), _tokens(CORRUPTED), METRIC)
        assert grid.named_shape == {"layer": 2, "seq": 6}
        np.testing.assert_allclose(
            np.asarray(grid.unwrap("layer", "seq")), expected, atol=1e-4, rtol=1e-4
        )
    # Positions the tokens agree on before any change carry no attribution at block 0.
    np.testing.assert_allclose(expected[0, [0, 2, 4, 5]], base, atol=1e-5)


def test_path_patch_equals_hand_built_two_runs(lm, stacked_lm):
    sender, receiver = "blocks.0.attn.z", "blocks.1.attn.z"
    clean = _clean_cache(lm, [sender])
    corrupted = interp.run_with_cache(lm, _tokens(CORRUPTED), names="attn.z")[1]
    to_internal = interp.HookPoint(
        "x", head_axes=(("head_groups", 2), ("query_heads", 2)), user_head_axis="heads"
    ).from_user

    def heads(*chosen):
        return sk.nx.wrap(
            jnp.isin(jnp.arange(4).reshape(2, 2), jnp.asarray(chosen)), "head_groups", "query_heads"
        )

    # Run A: head 1 of block 0 clean, its other heads at their corrupted values; block 1's
    # z is the receiver, so nothing else is frozen in this two-block model.
    mixed = sk.nx.nmap(jnp.where)(
        heads(1), to_internal(clean[sender]), to_internal(corrupted[sender])
    )
    run_a = _insert_after(lm, sender, _SetAt(mixed, sk.nx.wrap(jnp.asarray(True))))
    received = interp.run_with_cache(run_a, _tokens(CORRUPTED), names=[receiver])[1][receiver]
    # Run B: heads 0 and 3 of block 1 get what run A gave them.
    run_b = _insert_after(lm, receiver, _SetAt(to_internal(received), heads(0, 3)))
    expected = float(_metric_of(run_b, _tokens(CORRUPTED)))
    for model in (lm, stacked_lm):
        ours = interp.path_patch(
            model,
            _tokens(CLEAN),
            _tokens(CORRUPTED),
            METRIC,
            senders={sender: [1]},
            receivers={receiver: [0, 3]},
        )
        np.testing.assert_allclose(float(ours), expected, atol=1e-5)
    assert abs(expected - float(_metric_of(lm, _tokens(CORRUPTED)))) > 1e-4


def test_path_patch_without_freezing_into_the_output_is_the_total_effect(lm):
    total = interp.activation_patch(
        lm, _tokens(CLEAN), _tokens(CORRUPTED), METRIC, names="blocks.0.attn_out", over=()
    )
    path = interp.path_patch(
        lm,
        _tokens(CLEAN),
        _tokens(CORRUPTED),
        METRIC,
        senders="blocks.0.attn_out",
        receivers="blocks.1.resid_post",
        freeze=(),
    )
    np.testing.assert_allclose(float(path), float(total.unwrap()), atol=1e-5)


def test_new_tokens_and_ids_do_not_recompile(lm):
    traces = []

    def metric(logits):
        traces.append(1)
        return METRIC(logits)

    first = interp.activation_patch(lm, _tokens(CLEAN), _tokens(CORRUPTED), metric)
    second = interp.activation_patch(lm, _tokens(CORRUPTED), _tokens(CLEAN), metric)
    assert len(traces) == 1
    assert np.abs(np.asarray(first.data_array) - np.asarray(second.data_array)).max() > 1e-4
    interp.activation_patch(lm, _tokens(CLEAN), _tokens(CORRUPTED), interp.logit_diff(1, 2))
    size = _patching._run._cache_size()
    interp.activation_patch(lm, _tokens(CLEAN), _tokens(CORRUPTED), interp.logit_diff(3, 4))
    assert _patching._run._cache_size() == size


def test_bad_grids_and_inputs_are_errors(lm):
    clean, corrupted = _tokens(CLEAN), _tokens(CORRUPTED)
    with pytest.raises(ValueError, match="over has 'heads'"):
        interp.activation_patch(lm, clean, corrupted, METRIC, over=("layer", "heads"))
    with pytest.raises(ValueError, match="add 'layer'"):
        interp.activation_patch(lm, clean, corrupted, METRIC, over=("seq",))
    with pytest.raises(ValueError, match="same axes and sizes"):
        interp.activation_patch(lm, clean, _tokens(CORRUPTED[:, :4]), METRIC)
    with pytest.raises(ValueError, match="metric must return a scalar"):
        interp.activation_patch(lm, clean, corrupted, lambda logits: logits, over=("layer",))
    with pytest.raises(ValueError, match="no hook point matches"):
        interp.attribution_patch(lm, clean, corrupted, METRIC, names="resid_middle")
    with pytest.raises(ValueError, match="out of range"):
        interp.path_patch(
            lm, clean, corrupted, METRIC, senders={"blocks.0.attn.z": [7]}, receivers="logits"
        )
