"""A run folder's files, read without torch (the sweep store and the probe read them too).

    config.toml        the resolved config
    resume.safetensors a mid-run checkpoint while training (checkpoint.py)
    model.safetensors  the trained weights
    training.json      the training result: with the weights, a complete checkpoint
    metrics.json       everything measured; a folder with a valid metrics.json is a finished run
"""

from __future__ import annotations

import json
from pathlib import Path

from moelab.errors import MoelabError

REQUIRED_METRICS = ("name", "p_total", "p_active", "bits", "bits_per_param", "accuracy", "config")


def read_metrics(path: str | Path) -> dict:
    """A run's metrics.json, checked: a truncated or foreign file is a MoelabError naming it."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise MoelabError(f"{path}: no such file; is this a finished run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MoelabError(f"{path}: not valid JSON ({err}); the file is truncated or damaged: "
                          "delete it and rerun the run to measure it again") from None
    missing = [k for k in REQUIRED_METRICS if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        raise MoelabError(f"{path}: not a moelab run's metrics (no {missing[0]!r}); delete it and rerun the run")
    return metrics
