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


# The widest matrix or vector instructions a CPU offers, by the /proc/cpuinfo flag that names them.
# They matter beyond speed: PyTorch's kernels sum in a different order on each, and the same
# learned-router MoE and seed stored 2.1x the bits on an AVX-512 EPYC that it stored on an AVX2 one
# (docs/results.md, "Result 9 at lab scale"), where both machines called themselves "AMD EPYC".
CPU_ISAS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("asimd", "NEON"))


def cpu_isa(flags: set[str]) -> str | None:
    """The widest instruction set among `flags` (a CPU's /proc/cpuinfo flags), e.g. 'AVX-512'."""
    return next((name for flag, name in CPU_ISAS if flag in flags), None)


@cache
def cpu_model() -> str:
    """The CPU's marketing name and its widest instruction set (e.g. 'AMD EPYC 7B13, AVX2'), or
    platform.processor() where /proc is absent. Virtual machines often report only 'AMD EPYC', so
    the instruction set is what tells two of them apart."""
    name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    isa = cpu_isa(flags)
    return f"{name}, {isa}" if isa else name


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


@cache
def code_commit() -> str | None:
    """The commit of the code this process runs: `git_commit()` when first asked, then the same
    answer. moelab.run asks on import, so a sweep worker, or a long `moelab train`, that outlives
    a commit still records the code it imported, not the checkout's new HEAD."""
    return git_commit()


def environment(device) -> dict:
    """Provenance of a result computed on `device` (a torch.device, 'cpu', 'cuda:0', or a label)."""
    return {"versions": versions(), "platform": platform.platform(), "device": device_name(device),
            "git_commit": code_commit()}
