"""Sweeps: grids of runs, the SQLite results store, and the driver that runs and resumes them.

Names are imported on first use (PEP 562), so that opening a store (`moelab.sweeps.store`) or
reading a sweep file does not import torch and the trainer with the driver and its executors."""

from importlib import import_module

_HOMES = {
    "LocalExecutor": "executors", "RayExecutor": "executors", "make_executor": "executors",
    "Sweep": "grid", "SweepRun": "grid", "load_sweep": "grid", "load_sweep_preset": "grid",
    "sweep_preset_names": "grid", "Progress": "runner", "run_sweep": "runner", "Store": "store",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'moelab.sweeps' has no attribute {name!r}")
    return getattr(import_module(f"moelab.sweeps.{_HOMES[name]}"), name)
