"""`saikei convert`: a GGUF file becomes a Hugging Face directory that transformers loads.

The GGUF file is written from a random `transformers` Llama the way llama.cpp's
converter writes it (the helpers of tests/models/test_gguf.py); the oracle is
that `transformers` model.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from saikei.cli import main  # noqa: E402
from saikei.models import transformer  # noqa: E402
from tests.models.test_gguf import _gguf_from_hf, _hf_model  # noqa: E402

GGUF_CONTEXT = 128  # what the helpers write as llama.context_length


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    model = _hf_model("Llama")
    path = _gguf_from_hf(model, "llama", tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    return model, path


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    _, path = source
    out = tmp_path_factory.mktemp("converted") / "hf"
    assert main(["convert", path, str(out)]) == 0
    return out


def test_transformers_loads_it_with_the_source_logits(source, converted):
    model, _ = source
    loaded = transformers.AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    tokens = torch.tensor([[3, 14, 15, 9, 26, 5, 35, 8]])
    with torch.no_grad():
        want = model(tokens).logits.numpy()
        got = loaded.eval()(tokens).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_config_keeps_the_context_length_and_special_tokens(converted):
    config = transformers.AutoConfig.from_pretrained(converted)
    assert config.max_position_embeddings == GGUF_CONTEXT
    assert config.eos_token_id == 0 and config.bos_token_id == 0
    assert json.loads((converted / "generation_config.json").read_text())["eos_token_id"] == 0


def test_transformers_tokenizer_encodes_like_the_gguf_tokenizer(source, converted):
    _, path = source
    ours = transformer.load_tokenizer(path)
    theirs = transformers.AutoTokenizer.from_pretrained(converted)
    text = "#$%&'()*+,-./0123"
    assert theirs(text)["input_ids"] == ours.encode(text).ids
    assert theirs.model_max_length == GGUF_CONTEXT


def test_saikei_loads_the_directory_back(source, converted, capsys):
    assert main(["info", str(converted), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["parameters"] == f"{source[0].num_parameters():,}"


def test_bfloat16_output(source, tmp_path):
    _, path = source
    assert main(["convert", path, str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"


def test_refuses_a_non_empty_outdir_without_overwrite(source, tmp_path, capsys):
    _, path = source
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["convert", path, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["convert", path, str(tmp_path), "--overwrite"]) == 0
    assert (tmp_path / "config.json").is_file() and (tmp_path / "keep.txt").is_file()


def test_info_on_the_gguf_file_names_its_tensor_types(source, capsys):
    model, path = source
    assert main(["info", path, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    reader = gguf.GGUFReader(path)
    assert facts["GGUF tensor types"] == f"F32 ({len(reader.tensors)})"
    assert facts["format"] == "GGUF file"
    assert facts["parameters"] == f"{model.num_parameters():,}"
