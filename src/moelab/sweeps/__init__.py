"""Sweeps: grids of runs, the SQLite results store, and the driver that runs and resumes them."""

from moelab.sweeps.executors import LocalExecutor, RayExecutor, make_executor
from moelab.sweeps.grid import Sweep, SweepRun, load_sweep, load_sweep_preset, sweep_preset_names
from moelab.sweeps.runner import Progress, run_sweep
from moelab.sweeps.store import Store

__all__ = ["LocalExecutor", "Progress", "RayExecutor", "make_executor", "Store", "Sweep", "SweepRun", "load_sweep", "load_sweep_preset", "run_sweep",
           "sweep_preset_names"]
