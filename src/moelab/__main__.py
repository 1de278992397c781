"""`python -m moelab`: the same command line as `moelab` (also the module entry for torchrun)."""

from moelab.cli import app

app(prog_name="moelab")
