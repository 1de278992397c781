"""Setuptools hook: the built package records the git commit it was built from (provenance.py).

Everything else about the package is in pyproject.toml."""

import json
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithCommit(build_py):
    """Writes moelab/_build.json ({"git_commit": ...}) into the build when the source is a git clone."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # `pip install -e`: the package runs from the clone, whose git provenance reads directly
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                    check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return  # an archive without git: nothing to record
        target = Path(self.build_lib) / "moelab" / "_build.json"
        target.write_text(json.dumps({"git_commit": commit + ("+dirty" if dirty else "")}) + "\n")


setup(cmdclass={"build_py": BuildPyWithCommit})
