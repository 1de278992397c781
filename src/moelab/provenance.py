"""Where a result came from: package versions, platform, the device it ran on and the git commit.

Every run, probe and benchmark records `environment(device)`. It imports nothing heavy beyond
torch, so the probe can record provenance without loading the trainer.
"""

from __future__ import annotations

import json
import platform
import subprocess
from functools import cache
from pathlib import Path

import moelab


@cache
def cpu_model() -> str:
    """The CPU's marketing name (e.g. 'AMD EPYC 7B13'), or platform.processor() where /proc is absent."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """'cpu (AMD EPYC ...)', a CUDA device's name, or the text given (e.g. 'remote' for a server)."""
    import torch

    if isinstance(device, str) and device not in ("cpu",) and not device.startswith("cuda"):
        return device
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({cpu_model()})"


def git_commit() -> str | None:
    """The commit moelab's code comes from, with '+dirty' for uncommitted changes: its source tree's
    HEAD when it runs from a clone (an editable install), else the commit recorded when it was
    built (`pip install .` from a clone writes moelab/_build.json, see setup.py); None when neither
    is known (a build from an archive without git)."""
    src = Path(moelab.__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(src), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        if Path(top).resolve() / "src" / "moelab" != src:  # a git repo around an installed copy is not ours
            raise subprocess.SubprocessError
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return json.loads((src / "_build.json").read_text())["git_commit"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return commit + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    import numpy as np
    import safetensors
    import torch

    return {"moelab": moelab.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "safetensors": safetensors.__version__}


def environment(device) -> dict:
    """Provenance of a result computed on `device` (a torch.device, 'cpu', 'cuda:0', or a label)."""
    return {"versions": versions(), "platform": platform.platform(), "device": device_name(device),
            "git_commit": git_commit()}
