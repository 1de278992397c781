"""Durable file writes: write a temporary file in the same folder, fsync it, rename it over the
target, then fsync the folder.

A reader never sees a half-written metrics file, config or checkpoint, and once a write returns
the file survives a crash or a power cut: the rename is atomic, and both fsyncs make sure that
what the rename points at, and the rename itself, are on disk.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's) contents to disk. Folders cannot be opened on Windows: skip."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None], durable: bool = True) -> None:
    """Call `write(tmp_path)` and atomically move the result to `path` (mode 0666 less the umask);
    `durable=False` skips the fsyncs, for files that are rewritten every second (progress)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual file mode
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), durable)


def json_safe(x: Any) -> Any:
    """The value with NaN and infinities replaced by None (null), at any depth: strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def dumps(data: Any, indent: int | None = 2) -> str:
    """Strict JSON (NaN becomes null), keys sorted."""
    return json.dumps(json_safe(data), indent=indent, sort_keys=True, allow_nan=False)


def atomic_write_json(path: str | Path, data: Any, durable: bool = True) -> None:
    atomic_write_text(path, dumps(data) + "\n", durable)


def toml_value(value: Any, where: str) -> str:
    """One TOML value: a boolean, integer, finite float, string (JSON's escapes are TOML's) or list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} = {value}: TOML configs hold finite numbers only")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v, where) for v in value) + "]"
    raise TypeError(f"{where}: {type(value).__name__} has no TOML form here")


def toml_dumps(data: dict[str, Any], prefix: str = "") -> str:
    """A config as TOML: plain keys first, then one [table] per nested dict (tables of scalars and
    lists are all a moelab config holds); a None is left out (TOML has no null: the field reads back
    as its default). Written here rather than by a dependency so that moelab writes its configs
    wherever it imports (a GPU image without tomli-w); tomllib reads it back."""
    lines = [f"{key} = {toml_value(value, prefix + key)}" for key, value in data.items()
             if not isinstance(value, dict) and value is not None]
    for key, value in data.items():
        if isinstance(value, dict):
            table = prefix + key
            body = toml_dumps(value, table + ".")
            lines.append(("\n" if lines else "") + f"[{table}]" + ("\n" + body if body else ""))
    return "\n".join(lines).replace("\n\n\n", "\n\n")


@contextmanager
def folder_lock(folder: str | Path):
    """Hold an exclusive lock on `folder` (a `.lock` file in it) for the `with` block: two
    processes never train the same run folder at once (a continued run training its parent while
    a sweep worker starts that parent). The lock goes with the process, so a killed worker never
    leaves it held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
