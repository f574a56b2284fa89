"""Token arrays shown as text with a real (locally trained) Hugging Face tokenizer."""

import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from saikei import sk
from saikei.toolshed import token_visualization as tv
from saikei.viz import _arrays_api as api

_SENTENCES = ["the cat sat on the mat", "the dog ate the cat food", "hello world"] * 5


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_SENTENCES, trainer)
    return tok


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>")


def _ids(tokenizer, text):
    return tokenizer.encode(text).ids


def test_token_lookup_decodes_byte_level_tokens(tokenizer):
    lookup = api.TokenLookup(tokenizer)
    ids = _ids(tokenizer, "the cat sat")
    assert "".join(lookup.text(i) for i in ids) == "the cat sat"
    assert lookup.is_special(tokenizer.token_to_id("<pad>"))
    assert not lookup.is_special(ids[0])
    assert lookup.text(10_000) == "<out of range: 10000>"
    assert lookup.text(-1) == "<out of range: -1>"


def test_token_lookup_with_transformers_tokenizer(hf_tokenizer, tokenizer):
    lookup = api.TokenLookup(hf_tokenizer)
    ids = _ids(tokenizer, "the dog")
    assert "".join(lookup.text(i) for i in ids) == "the dog"
    assert lookup.is_special(hf_tokenizer.bos_token_id)


def test_autovisualizer_for_hf_tokenizer(tokenizer):
    viz = api.ArrayAutovisualizer.for_tokenizer(tokenizer)
    cat = _ids(tokenizer, "the cat")[-1]
    assert viz.token_lookup_fn(cat) == repr(" cat")
    tokens = sk.nx.wrap(jnp.asarray(_ids(tokenizer, "the cat sat")), "seq")
    with treescope.active_autovisualizer.set_scoped(viz):
        text = treescope.render_to_text({"tokens": tokens})
    assert "<Arrayviz rendering>" in text


def test_token_array_html_contains_token_texts(tokenizer):
    pad = tokenizer.token_to_id("<pad>")
    ids = np.array([_ids(tokenizer, "the cat sat"), [*_ids(tokenizer, "hello world"), pad]])
    tokens = sk.nx.wrap(jnp.asarray(ids), "batch", "seq")
    html = tv.token_array_html(tokens, tokenizer)
    for word in (" cat", " sat", "hello", " world", "&lt;pad&gt;"):
        assert word in html
    assert "batch=1" in html


def test_token_array_accepts_numpy_and_jax(hf_tokenizer, tokenizer):
    ids = _ids(tokenizer, "the dog ate")
    for tokens in (np.array(ids), jnp.array(ids)):
        assert " dog" in tv.token_array_html(tokens, hf_tokenizer)


def test_show_token_array_prints_text_outside_ipython(tokenizer, capsys):
    bos = tokenizer.token_to_id("<bos>")
    tokens = sk.nx.wrap(jnp.asarray([[bos, *_ids(tokenizer, "the cat")]]), "batch", "seq")
    tv.show_token_array(tokens, tokenizer)
    assert capsys.readouterr().out == "batch=0: [<bos>][the][ cat]\n"


def test_axis_name_order_puts_last_axis_horizontally(tokenizer, capsys):
    ids = np.array([_ids(tokenizer, "the cat"), _ids(tokenizer, "the dog")])
    tokens = sk.nx.wrap(jnp.asarray(ids), "batch", "seq")
    tv.show_token_array(tokens, tokenizer, axis_name_order=["seq", "batch"])
    assert capsys.readouterr().out == "seq=0: [the][the]\nseq=1: [ cat][ dog]\n"


def test_axis_name_order_must_name_every_axis(tokenizer):
    tokens = sk.nx.wrap(jnp.zeros((2, 3), jnp.int32), "batch", "seq")
    with pytest.raises(ValueError, match="every axis"):
        tv.render_token_array(tokens, tokenizer, axis_name_order=["seq"])


def test_token_scores_broadcast_by_name(tokenizer, capsys):
    ids = np.array([_ids(tokenizer, "the cat"), _ids(tokenizer, "the dog")])
    tokens = sk.nx.wrap(jnp.asarray(ids), "batch", "seq")
    scores = sk.nx.wrap(jnp.array([0.5, -1.0]), "seq")
    tv.show_token_scores(tokens, scores, tokenizer)
    assert capsys.readouterr().out == (
        "batch=0: [the:+0.50][ cat:-1.00]\nbatch=1: [the:+0.50][ dog:-1.00]\n"
    )
    html = tv.token_scores_html(tokens, scores, tokenizer, vmax=2.0)
    assert " dog" in html


def test_token_scores_with_extra_axis_is_an_error(tokenizer):
    tokens = sk.nx.wrap(jnp.zeros(3, jnp.int32), "seq")
    scores = sk.nx.wrap(jnp.zeros((3, 2)), "seq", "layer")
    with pytest.raises(ValueError, match="layer"):
        tv.render_token_scores(tokens, scores, tokenizer)


def test_float_tokens_are_rejected(tokenizer):
    with pytest.raises(TypeError, match="integer"):
        tv.render_token_array(np.zeros(3), tokenizer)
