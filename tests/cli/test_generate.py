"""`saikei generate`: streamed text equals the text of `transformer.generate`'s tokens."""

import dataclasses

import jax.numpy as jnp
import pytest

from saikei import nn, sk
from saikei.cli import TextStream, TokenTap, listening, main, stream_generate
from saikei.models import transformer
from tests.cli.conftest import EOS

PROMPT = "the cat sat on the"


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_hf_dir):
    return (
        transformer.load_pretrained(tiny_hf_dir, progress=False),
        transformer.load_tokenizer(tiny_hf_dir),
    )


def _greedy(lm, ids, n, stop=(EOS,)):
    new = transformer.generate(
        lm,
        sk.nx.wrap(jnp.asarray(ids), "seq"),
        max_new_tokens=n,
        temperature=0.0,
        stop_tokens=stop,
    )
    tokens = [int(t) for t in new.unwrap("seq")]
    for i, token in enumerate(tokens):
        if token in stop:
            return tokens[: i + 1]
    return tokens


def test_generate_prints_the_greedy_continuation(capsys, tiny_hf_dir, model_and_tokenizer):
    lm, tok = model_and_tokenizer
    ids = tok.encode(PROMPT).ids
    expected = tok.decode(_greedy(lm, ids, 8))
    assert main(["generate", str(tiny_hf_dir), "--prompt", PROMPT, "--max-new-tokens", "8"]) == 0
    out, err = capsys.readouterr()
    assert out == expected + "\n", err


def test_no_stop_runs_to_max_new_tokens(capsys, tiny_hf_dir, model_and_tokenizer):
    lm, tok = model_and_tokenizer
    ids = tok.encode(PROMPT).ids
    argv = ["generate", str(tiny_hf_dir), "--prompt", PROMPT, "--max-new-tokens", "8", "--no-stop"]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert out == tok.decode(_greedy(lm, ids, 8, stop=())) + "\n"
    assert len(out.split()) == 8


def test_sampling_depends_on_the_seed_only(capsys, tiny_hf_dir):
    def sample(seed):
        argv = ["generate", str(tiny_hf_dir), "--prompt", PROMPT, "--max-new-tokens", "8",
                "--temperature", "5", "--no-stop", "--seed", str(seed)]  # fmt: skip
        assert main(argv) == 0
        return capsys.readouterr().out

    first, again, other = sample(0), sample(0), sample(1)
    assert first == again
    assert first != other


def test_stream_generate_reports_each_token_in_order(model_and_tokenizer):
    lm, tok = model_and_tokenizer
    ids = tok.encode(PROMPT).ids
    seen = []
    tokens = stream_generate(lm, ids, max_new_tokens=8, on_token=seen.append)
    assert seen == tokens == _greedy(lm, ids, 8, stop=())


def test_the_tap_fires_inside_the_compiled_loop_once_per_step(model_and_tokenizer):
    # Streaming rests on this: generate runs the tap at prefill and at every decode step.
    lm, tok = model_and_tokenizer
    calls = []
    tapped = dataclasses.replace(lm, body=nn.Sequential([TokenTap("test"), lm.body]))
    ids = tok.encode(PROMPT).ids
    with listening("test", lambda ids: calls.append(ids.tolist())):
        new = transformer.generate(
            tapped, sk.nx.wrap(jnp.asarray(ids), "seq"), max_new_tokens=8, temperature=0.0
        )
    tokens = [int(t) for t in new.unwrap("seq")]
    assert calls[0] == ids
    assert calls[1:] == [[t] for t in tokens[:-1]]


def test_text_stream_holds_back_split_characters():
    class Bytes:
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    out = []
    stream = TextStream(Bytes(), out.append)
    for b in "né".encode():
        stream.add(b)
    stream.finish()
    assert out == ["n", "é"]
