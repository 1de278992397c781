"""Every non-Python file the package needs is declared as package data, so `pip install .`
(not only an editable install) ships presets and bundled data."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_is_declared_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["moelab"]
    package = ROOT / "src" / "moelab"
    data_files = [p.relative_to(package).as_posix() for p in package.rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data_files, "expected presets and data files"
    missing = [f for f in data_files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/")
                                                for g in globs)]
    assert not missing, f"not declared in [tool.setuptools.package-data]: {missing}"
