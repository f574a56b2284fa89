"""The persistent compilation cache that `import saikei` turns on (saikei._compilation_cache).

The suite runs with the cache off (tests/conftest.py). The tests that need a
fresh `import saikei` run it in a subprocess with a cache directory under
tmp_path; each child prints one JSON line that the test reads. Cache hits and
misses are JAX's own monitoring events, never timings.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import warnings

import jax
import pytest

import saikei
from saikei import _compilation_cache

_HITS = "/jax/compilation_cache/cache_hits"
_MISSES = "/jax/compilation_cache/cache_misses"

# A fresh process imports saikei, runs WORK and reports what the cache did.
_CHILD = """
import json, warnings
events = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import saikei
import jax
jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
%(work)s
print(json.dumps({
    "dir": jax.config.jax_compilation_cache_dir,
    "min_compile_time": jax.config.jax_persistent_cache_min_compile_time_secs,
    "hits": events.count(%(hits)r),
    "misses": events.count(%(misses)r),
    "warnings": [str(w.message) for w in caught],
    "result": result,
}))
"""

# A tiny `generate` (the loop is compiled whole).
_GENERATE = """
from saikei import sk
from saikei.models.transformer import sampling
from saikei.models.transformer.variants import llamalike
cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
    embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1, vocab_size=11)
lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
prompt = sk.nx.wrap(jax.numpy.array([[1, 3, 4]]), "batch", "seq")
tokens = sampling.generate(lm, prompt, max_new_tokens=3, temperature=0.0)
result = tokens.unwrap("batch", "seq").tolist()
"""

# One small jitted function.
_JIT = """
x = jax.numpy.ones((8, 8))
result = float(jax.jit(lambda x: jax.numpy.tanh(x @ x.T).sum())(x))
"""

# Variables that would change the children's choice of cache if inherited.
_CACHE_VARIABLES = (
    "SAIKEI_COMPILATION_CACHE",
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_ENABLE_COMPILATION_CACHE",
    "JAX_COMPILATION_CACHE_MAX_SIZE",
    "PYTHONSTARTUP",
)


def _run(tmp_path: pathlib.Path, work: str = _JIT, **env: str) -> dict:
    """Runs `work` in a fresh process (see `_CHILD`); XDG_CACHE_HOME is under tmp_path."""
    child_env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARIABLES}
    child_env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    child_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD % {"work": work, "hits": _HITS, "misses": _MISSES}],
        capture_output=True,
        text=True,
        env=child_env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _entries(directory: pathlib.Path) -> set[str]:
    return {p.name for p in directory.glob("*-cache")} if directory.is_dir() else set()


def test_a_new_process_loads_generate_from_the_cache_instead_of_compiling(tmp_path):
    cache = tmp_path / "cache"
    # Every compile is written, so that the test does not depend on compile times.
    env = {
        "SAIKEI_COMPILATION_CACHE": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }

    first = _run(tmp_path, _GENERATE, **env)
    assert first["dir"] == str(cache)
    assert first["hits"] == 0 and first["misses"] > 0, first
    written = _entries(cache)
    assert any(name.startswith("jit__generate_impl-") for name in written), written

    second = _run(tmp_path, _GENERATE, **env)
    assert second["misses"] == 0 and second["hits"] > 0, second
    assert _entries(cache) == written, "the second process compiled and wrote new entries"
    assert second["result"] == first["result"]
    assert first["warnings"] == second["warnings"] == []


def test_default_directory_is_under_xdg_cache_home_with_saikeis_threshold(tmp_path):
    result = _run(tmp_path)
    expected = tmp_path / "xdg" / "saikei" / "jax-compilation-cache"
    assert result["dir"] == str(expected)
    assert expected.is_dir()
    assert result["min_compile_time"] == _compilation_cache.MIN_COMPILE_TIME_SECS
    assert result["warnings"] == []


def test_opting_out_writes_nothing(tmp_path):
    result = _run(
        tmp_path, SAIKEI_COMPILATION_CACHE="Off", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    assert result["dir"] is None
    assert result["hits"] == result["misses"] == 0
    assert not (tmp_path / "xdg").exists()


def test_a_directory_chosen_for_jax_is_left_alone(tmp_path):
    jax_dir = tmp_path / "jax-cache"
    result = _run(
        tmp_path,
        JAX_COMPILATION_CACHE_DIR=str(jax_dir),
        SAIKEI_COMPILATION_CACHE=str(tmp_path / "ignored"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    assert result["dir"] == str(jax_dir)
    assert result["min_compile_time"] == 0
    assert _entries(jax_dir)
    assert not (tmp_path / "ignored").exists() and not (tmp_path / "xdg").exists()


def test_an_unusable_directory_leaves_the_cache_off_with_one_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    wanted = blocker / "cache"
    result = _run(tmp_path, SAIKEI_COMPILATION_CACHE=str(wanted))
    assert result["dir"] is None
    assert result["hits"] == result["misses"] == 0
    assert result["result"] == pytest.approx(64 * math.tanh(8.0))  # it still runs
    (message,) = result["warnings"]
    assert str(wanted) in message and "SAIKEI_COMPILATION_CACHE" in message


# In-process checks of the choices made at import and by set_compilation_cache.

_CONFIG = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_enable_compilation_cache",
)


@pytest.fixture
def jax_cache_config(monkeypatch):
    """Restores JAX's cache settings (and reopens JAX's cache) after the test."""
    for name in _CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    saved = {name: getattr(jax.config, name) for name in _CONFIG}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    _compilation_cache._jax_cache.reset_cache()


@pytest.mark.parametrize("value", ["0", "off", "FALSE", " no "])
def test_off_values_change_nothing_at_import(jax_cache_config, monkeypatch, value):
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("SAIKEI_COMPILATION_CACHE", value)
    _compilation_cache.enable_at_import()
    assert jax.config.jax_compilation_cache_dir is None


@pytest.mark.parametrize("value", ["", "1", "on", "True"])
def test_on_values_choose_the_default_directory(jax_cache_config, monkeypatch, tmp_path, value):
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("SAIKEI_COMPILATION_CACHE", value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _compilation_cache.enable_at_import()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "saikei/jax-compilation-cache")


def test_a_relative_xdg_cache_home_is_ignored(jax_cache_config, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    _compilation_cache.enable_at_import()
    assert jax.config.jax_compilation_cache_dir == str(
        tmp_path / ".cache/saikei/jax-compilation-cache"
    )


def test_import_keeps_a_directory_set_with_jax_config(jax_cache_config, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    monkeypatch.setenv("SAIKEI_COMPILATION_CACHE", str(tmp_path / "other"))
    _compilation_cache.enable_at_import()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    assert not (tmp_path / "other").exists()


def test_import_keeps_jax_cache_disabled(jax_cache_config, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", False)
    monkeypatch.setenv("SAIKEI_COMPILATION_CACHE", str(tmp_path / "other"))
    _compilation_cache.enable_at_import()
    assert jax.config.jax_compilation_cache_dir is None


def test_unusable_default_directory_warns_once_naming_it(jax_cache_config, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _compilation_cache.enable_at_import()
    (warning,) = caught
    assert issubclass(warning.category, RuntimeWarning)
    assert str(tmp_path / "file/saikei/jax-compilation-cache") in str(warning.message)
    assert "SAIKEI_COMPILATION_CACHE" in str(warning.message)
    assert jax.config.jax_compilation_cache_dir is None


def test_set_compilation_cache_returns_the_previous_directory(jax_cache_config, tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    assert saikei.set_compilation_cache(tmp_path / "a") is None
    assert (tmp_path / "a").is_dir()
    assert saikei.set_compilation_cache(str(tmp_path / "b")) == str(tmp_path / "a")
    assert saikei.set_compilation_cache(None) == str(tmp_path / "b")
    assert jax.config.jax_compilation_cache_dir is None


def test_set_compilation_cache_applies_the_threshold_unless_the_user_set_one(
    jax_cache_config, tmp_path
):
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # JAX's default
    saikei.set_compilation_cache(tmp_path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == (
        _compilation_cache.MIN_COMPILE_TIME_SECS
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 3.0)
    saikei.set_compilation_cache(tmp_path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 3.0


def test_set_compilation_cache_rejects_an_unusable_directory(jax_cache_config, tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"cannot keep compiled programs in .*file/cache"):
        saikei.set_compilation_cache(tmp_path / "file" / "cache")
    assert jax.config.jax_compilation_cache_dir is None


def test_set_compilation_cache_moves_an_open_cache(jax_cache_config, tmp_path):
    # JAX opens its cache at the first compile; a later choice must still count.
    saikei.set_compilation_cache(tmp_path / "first")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.jit(lambda x: x * 3 + 1)(jax.numpy.arange(5.0)).block_until_ready()
    assert _entries(tmp_path / "first")
    saikei.set_compilation_cache(tmp_path / "second")
    jax.jit(lambda x: x * 5 - 2)(jax.numpy.arange(7.0)).block_until_ready()
    assert _entries(tmp_path / "second")
