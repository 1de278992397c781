"""Stop requests: one process-wide flag that SIGTERM or a `--stop-after` deadline sets, and the
training loop (checkpoint.py) and a sweep driver (sweeps/runner.py) read. Torch-free, so the
sweep driver's lightest modules can use it.
"""

from __future__ import annotations

import re
import signal
import time

from moelab.errors import MoelabError

_stop: dict[str, object] = {"reason": None, "deadline": None}


def request_stop(reason: str) -> None:
    """Ask the training loop (and a sweep driver) of this process to checkpoint and stop."""
    _stop["reason"] = _stop["reason"] or reason


def stop_at(deadline: float, reason: str) -> None:
    """Request a stop once `time.monotonic()` reaches `deadline` (`--stop-after`)."""
    _stop["deadline"] = (deadline, reason)


def stop_reason() -> str | None:
    """Why this process was asked to stop, or None."""
    if _stop["reason"] is None and _stop["deadline"] is not None and time.monotonic() >= _stop["deadline"][0]:
        _stop["reason"] = _stop["deadline"][1]
    return _stop["reason"]


def clear_stop() -> None:
    _stop["reason"], _stop["deadline"] = None, None


def stop_on_sigterm() -> None:
    """SIGTERM (what SLURM and Kubernetes send before a kill) becomes a stop request."""
    signal.signal(signal.SIGTERM, lambda signum, frame: request_stop("SIGTERM"))


DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(text: str, option: str = "--stop-after") -> float:
    """'2h30m', '90m', '45s', '1.5h' -> seconds; a MoelabError naming `option` otherwise."""
    compact = text.replace(" ", "").lower()
    parts = DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise MoelabError(f"{option} {text!r}: give a duration such as 2h30m, 90m or 45s")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise MoelabError(f"{option} {text!r}: must be longer than zero")
    return seconds
