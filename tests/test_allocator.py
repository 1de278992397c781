"""The allocator setting: applied on Linux with glibc, left alone where the environment decides."""

import sys

import pytest

from moelab.allocator import USER_SETTINGS, reuse_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_it_applies_on_linux_with_glibc(monkeypatch):
    for name in USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert reuse_freed_memory() is True


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"])
def test_the_environments_own_allocator_settings_win(monkeypatch, name):
    monkeypatch.setenv(name, "131072" if name.startswith("MALLOC") else "x")
    assert reuse_freed_memory() is False
