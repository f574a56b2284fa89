"""`saikei inspect` on a tiny random Llama: what the report holds, checked against transformers."""

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from saikei.cli import inspect_model, main  # noqa: E402
from saikei.models import transformer  # noqa: E402
from tests.cli.conftest import tiny_hf_model  # noqa: E402

PROMPT = "the cat sat on the mat and the dog"
SECTIONS = ("facts", "continuation", "attention", "logit-lens", "heads", "model")


@pytest.fixture(scope="module")
def inspection(tiny_hf_dir):
    lm = transformer.load_pretrained(tiny_hf_dir, progress=False)
    tok = transformer.load_tokenizer(tiny_hf_dir)
    return inspect_model(lm, tok, tok.encode(PROMPT).ids, max_new_tokens=6)


@pytest.fixture(scope="module")
def hf_run(inspection):
    model = tiny_hf_model()
    model.config._attn_implementation = "eager"  # so that attention weights come back
    with torch.no_grad():
        out = model(torch.tensor([inspection.token_ids]), output_attentions=True)
    return out


@pytest.fixture(scope="module")
def report(tiny_hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    status = main(["inspect", str(tiny_hf_dir), "--prompt", PROMPT, "--max-new-tokens", "6",
                   "--out", str(out)])  # fmt: skip
    assert status == 0
    return out


def test_attention_patterns_match_transformers(inspection, hf_run):
    want = np.stack([a[0].numpy() for a in hf_run.attentions])  # layer, heads, seq, kv_seq
    np.testing.assert_allclose(inspection.patterns, want, atol=1e-5, rtol=0)


def test_log_probabilities_match_transformers(inspection, hf_run):
    logp = torch.log_softmax(hf_run.logits[0], dim=-1).numpy()
    ids = inspection.token_ids
    want = [logp[i - 1, ids[i]] for i in range(1, len(ids))]
    assert math.isnan(inspection.logprobs[0])
    np.testing.assert_allclose(inspection.logprobs[1:], want, atol=1e-4, rtol=0)
    top = [int(i) for i in np.argsort(-logp, axis=-1)[:, 0]]
    assert [row[0][1] for row in inspection.top_next] == pytest.approx(
        [float(np.exp(logp[i, t])) for i, t in enumerate(top)], abs=1e-4
    )


def test_continuation_is_greedy(inspection, hf_run):
    # Each generated token is the model's top prediction after the tokens before it.
    predicted = hf_run.logits[0].argmax(-1).numpy()
    n = inspection.num_prompt
    assert inspection.token_ids[n:] == [int(t) for t in predicted[n - 1 : -1]]


def test_last_logit_lens_row_is_the_models_prediction(inspection, hf_run):
    assert inspection.lens_labels[-1] == "blocks.1.resid_post"
    assert len(inspection.lens_labels) == 3  # resid_pre of blocks 0 and 1, then the output
    np.testing.assert_array_equal(inspection.lens_ids[-1], hf_run.logits[0].argmax(-1).numpy())


def test_head_scores_are_the_pattern_diagonals(inspection):
    p = inspection.patterns
    seq = p.shape[-1]
    want = np.mean([p[..., q, q - 1] for q in range(1, seq)], axis=0)
    np.testing.assert_allclose(inspection.previous_token_scores, want, atol=1e-6)
    assert inspection.induction_scores.shape == p.shape[:2]
    assert np.all((inspection.induction_scores >= 0) & (inspection.induction_scores <= 1))


def test_report_has_every_section(report):
    html = report.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "treescope-container" in html


def test_report_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    remote = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert remote == []
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", html)
    assert "<link" not in html.lower()


def test_report_shows_each_token_with_its_log_probability(report, inspection):
    html = report.read_text(encoding="utf-8")
    assert html.count('class="tok prompt"') == inspection.num_prompt
    assert html.count('class="tok new"') == len(inspection.token_ids) - inspection.num_prompt
    assert f"log p = {inspection.logprobs[1]:.2f}" in html


def test_prompt_tokens_are_not_regenerated(inspection, tiny_hf_dir):
    tok = transformer.load_tokenizer(tiny_hf_dir)
    assert inspection.token_ids[: inspection.num_prompt] == tok.encode(PROMPT).ids
    assert jnp.asarray(inspection.token_ids).dtype == jnp.int32


@pytest.mark.parametrize("length", [2, 3, 4, 9, 10])
@pytest.mark.parametrize("first", [None, 7])
def test_induction_probe_repeats_a_block_after_the_first_token(length, first):
    from saikei.cli._inspection import _repeated_random

    ids, prefix, period = _repeated_random(length, 64, seed=0, first=first)
    assert len(ids) == length and prefix + 2 * period == length
    np.testing.assert_array_equal(ids[prefix : prefix + period], ids[prefix + period :])
    if first is not None and length >= 3:
        assert ids[0] == first and prefix >= 1
