"""The results store of a sweep folder: SQLite (`store.sqlite`) plus one folder per run.

One row per run, keyed by the hash of its resolved config; status is pending, running, done or
failed (with the reason). Only the sweep driver writes the database, each change in its own
transaction; workers write their run folder (atomically) and return their metrics.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from moelab.config import to_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key      TEXT PRIMARY KEY,
    label    TEXT NOT NULL,
    config   TEXT NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    reason   TEXT,
    metrics  TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated  REAL NOT NULL
)
"""


class Store:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.folder / "store.sqlite", isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def run_dir(self, key: str) -> Path:
        return self.folder / "runs" / key

    def _write(self, sql: str, args: tuple) -> None:
        with self.db:  # one transaction
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, args)

    def add(self, key: str, label: str, config) -> None:
        """Register a run as pending unless the store already knows it."""
        self._write("INSERT OR IGNORE INTO runs (key, label, config, status, updated) "
                    "VALUES (?, ?, ?, 'pending', ?)", (key, label, json.dumps(to_dict(config)), time.time()))

    def recover(self, keys: list[str], retry_failed: bool) -> None:
        """Before (re)starting: adopt runs whose metrics file landed after the driver stopped,
        put interrupted runs back to pending, and optionally the failed ones too."""
        for key, status in self.statuses(keys).items():
            metrics_file = self.run_dir(key) / "metrics.json"
            if status in ("pending", "running") and metrics_file.exists():
                self.mark_done(key, json.loads(metrics_file.read_text()))
            elif status == "running" or (status == "failed" and retry_failed):
                self._write("UPDATE runs SET status = 'pending', updated = ? WHERE key = ?",
                            (time.time(), key))

    def mark_running(self, key: str) -> None:
        self._write("UPDATE runs SET status = 'running', attempts = attempts + 1, updated = ? "
                    "WHERE key = ?", (time.time(), key))

    def mark_done(self, key: str, metrics: dict) -> None:
        self._write("UPDATE runs SET status = 'done', reason = NULL, metrics = ?, updated = ? "
                    "WHERE key = ?", (json.dumps(metrics), time.time(), key))

    def mark_failed(self, key: str, reason: str) -> None:
        self._write("UPDATE runs SET status = 'failed', reason = ?, updated = ? WHERE key = ?",
                    (reason, time.time(), key))

    def statuses(self, keys: list[str] | None = None) -> dict[str, str]:
        rows = self.db.execute("SELECT key, status FROM runs").fetchall()
        wanted = None if keys is None else set(keys)
        return {k: s for k, s in rows if wanted is None or k in wanted}

    def rows(self, keys: list[str] | None = None) -> list[dict]:
        """Every run (or those in `keys`) as a dict with its decoded config and metrics."""
        cursor = self.db.execute("SELECT key, label, config, status, reason, metrics, attempts, updated FROM runs")
        names = [c[0] for c in cursor.description]
        out = []
        wanted = None if keys is None else set(keys)
        for row in cursor.fetchall():
            record = dict(zip(names, row))
            if wanted is not None and record["key"] not in wanted:
                continue
            record["config"] = json.loads(record["config"])
            record["metrics"] = json.loads(record["metrics"]) if record["metrics"] else None
            out.append(record)
        return out
