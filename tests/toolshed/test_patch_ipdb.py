"""Tests for saikei.toolshed.patch_ipdb, with a stand-in IPython debugger module."""

import pdb
import sys
import types

import pytest

from saikei.toolshed import patch_ipdb


@pytest.fixture
def fake_ipython(monkeypatch):
    """Installs a minimal `IPython.core.debugger` whose Pdb subclasses pdb.Pdb."""

    class Pdb(pdb.Pdb):
        pass

    ipython = types.ModuleType("IPython")
    core = types.ModuleType("IPython.core")
    debugger = types.ModuleType("IPython.core.debugger")
    debugger.Pdb = Pdb
    ipython.core = core
    core.debugger = debugger
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.core", core)
    monkeypatch.setitem(sys.modules, "IPython.core.debugger", debugger)
    return Pdb


def test_patch_shows_values_with_treescope(fake_ipython, monkeypatch):
    shown = []
    monkeypatch.setattr(patch_ipdb.treescope, "display", shown.append)
    patch_ipdb.patch_ipdb()
    try:
        debugger = fake_ipython()
        debugger.displayhook({"a": 1})
        debugger.displayhook(None)
    finally:
        patch_ipdb.unpatch_ipdb()
    assert shown == [{"a": 1}]


def test_unpatch_restores_inherited_hook(fake_ipython):
    patch_ipdb.patch_ipdb()
    patch_ipdb.patch_ipdb()  # idempotent
    assert fake_ipython.displayhook is not pdb.Pdb.displayhook
    patch_ipdb.unpatch_ipdb()
    assert fake_ipython.displayhook is pdb.Pdb.displayhook
    patch_ipdb.unpatch_ipdb()  # no-op when not patched
    assert fake_ipython.displayhook is pdb.Pdb.displayhook


def test_unpatch_restores_own_hook(fake_ipython):
    def own(self, obj):
        return "own"

    fake_ipython.displayhook = own
    patch_ipdb.patch_ipdb()
    assert fake_ipython.displayhook is not own
    patch_ipdb.unpatch_ipdb()
    assert fake_ipython.displayhook is own


def test_missing_ipython_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.core", None)
    monkeypatch.setitem(sys.modules, "IPython.core.debugger", None)
    with pytest.raises(ImportError, match="pip install ipython"):
        patch_ipdb.patch_ipdb()
