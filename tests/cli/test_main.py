"""The `saikei` command's entry points, and its answer to bad input: exit status 2, one line."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from saikei.cli import main
from tests.cli.conftest import CONTEXT


def _run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _assert_one_line_error(status, err, *words):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_model_file(capsys, tmp_path):
    status, _, err = _run(capsys, "info", str(tmp_path / "nope.gguf"))
    _assert_one_line_error(status, err, "nope.gguf", "does not exist")


def test_directory_without_config(capsys, tmp_path):
    status, _, err = _run(capsys, "generate", str(tmp_path), "--prompt", "the cat")
    _assert_one_line_error(status, err, "config.json")


def test_file_that_is_not_gguf(capsys, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x80\x04not a gguf file")
    status, _, err = _run(capsys, "info", str(path))
    _assert_one_line_error(status, err, "not a GGUF file")


def test_unsupported_architecture(capsys, tmp_path, tiny_hf_dir):
    model = tmp_path / "bert"
    shutil.copytree(tiny_hf_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "bert"
    (model / "config.json").write_text(json.dumps(config))
    status, _, err = _run(capsys, "info", str(model))
    _assert_one_line_error(status, err, "unsupported architecture", "bert", "llama")


def test_prompt_longer_than_context(capsys, tiny_hf_dir):
    prompt = " ".join(["cat"] * CONTEXT)
    status, _, err = _run(capsys, "generate", str(tiny_hf_dir), "--prompt", prompt)
    _assert_one_line_error(status, err, f"context of {CONTEXT} tokens", "shorten the prompt")


def test_prompt_and_new_tokens_longer_than_context(capsys, tiny_hf_dir):
    status, _, err = _run(
        capsys, "inspect", str(tiny_hf_dir), "--prompt", "the cat sat", "--max-new-tokens", "22"
    )
    _assert_one_line_error(status, err, "3 tokens and 22 new tokens make 25", "fewer new tokens")


def test_empty_prompt(capsys, tiny_hf_dir):
    status, _, err = _run(capsys, "generate", str(tiny_hf_dir), "--prompt", "")
    _assert_one_line_error(status, err, "prompt is empty")


def test_bad_option_value_is_one_line(capsys, tiny_hf_dir):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tiny_hf_dir), "--prompt", "the", "--max-new-tokens", "0"])
    _, err = capsys.readouterr()
    _assert_one_line_error(exit_info.value.code, err, "--max-new-tokens", "--help")


def test_missing_subcommand_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    _, err = capsys.readouterr()
    _assert_one_line_error(exit_info.value.code, err, "COMMAND")


def test_convert_refuses_a_directory(capsys, tmp_path, tiny_hf_dir):
    status, _, err = _run(capsys, "convert", str(tiny_hf_dir), str(tmp_path / "out"))
    _assert_one_line_error(status, err, "not a GGUF file")


def test_info_counts_the_parameters_transformers_counts(capsys, tiny_hf_dir):
    from tests.cli.conftest import tiny_hf_model

    status, out, err = _run(capsys, "info", str(tiny_hf_dir), "--json")
    assert status == 0, err
    facts = json.loads(out)
    assert facts["parameters"] == f"{tiny_hf_model().num_parameters():,}"
    assert facts["architecture"].startswith("llama")
    assert facts["context length"] == f"{CONTEXT} tokens"
    assert facts["attention heads"] == "4 query heads, 2 key/value heads"
    assert facts["parameter dtypes"].startswith("float32")


def test_info_prints_aligned_facts(capsys, tiny_hf_dir):
    status, out, _ = _run(capsys, "info", str(tiny_hf_dir))
    assert status == 0
    assert "layers:" in out and "vocabulary:" in out and "64" in out


def _env():
    # The child must import this checkout's saikei (and never touch a network).
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    return env


def test_python_dash_m_saikei_answers_help():
    proc = subprocess.run(
        [sys.executable, "-m", "saikei", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("inspect", "generate", "info", "convert"):
        assert command in proc.stdout


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    script = shutil.which("saikei", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.fail("the `saikei` console script is not installed; run `pip install -e .`")
    proc = subprocess.run(
        [script, "info", str(tmp_path / "missing.gguf")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.gguf" in lines[0], proc.stderr
