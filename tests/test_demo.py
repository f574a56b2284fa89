"""Tests for the demo (`python -m saikei.demo`), run as a user would run it."""

import subprocess
import sys

import pytest

_LAYER_NAMES = ("MLP", "Linear", "AddBias", "Relu", "SaveActivation")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "nested" / "demo.html"
    proc = subprocess.run(
        [sys.executable, "-m", "saikei.demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, out


def test_demo_exits_cleanly(demo_run):
    proc, _ = demo_run
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def test_demo_reports_that_each_rewrite_did_what_it_should(demo_run):
    proc, _ = demo_run
    assert "output unchanged: True" in proc.stdout
    assert "output halved: True" in proc.stdout
    assert "captured hidden activation {batch:3, hidden:8}" in proc.stdout


def test_demo_prints_the_patched_model(demo_run):
    proc, _ = demo_run
    for name in (*_LAYER_NAMES, "mlp.out.weights"):
        assert name in proc.stdout, f"{name!r} missing from the printed rendering"


def test_demo_writes_html_naming_every_layer(demo_run):
    _, out = demo_run
    assert out.is_file(), f"the demo did not write {out}"
    html = out.read_text(encoding="utf-8")
    assert html.lstrip().startswith("<"), "the output is not HTML"
    for name in (*_LAYER_NAMES, "mlp.in.weights", "mlp.out.weights", "hidden_activation"):
        assert name in html, f"{name!r} missing from {out}"


def test_demo_rejects_unknown_arguments():
    proc = subprocess.run(
        [sys.executable, "-m", "saikei.demo", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    assert "--no-such-flag" in proc.stderr
