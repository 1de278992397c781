"""The results store of a sweep folder: SQLite (`store.sqlite`) plus one folder per run.

One row per run, keyed by the hash of its resolved config (`config.run_key`); status is pending,
running, done or failed (with the reason). Only the sweep driver writes the database, each change
in its own transaction; workers write their run folder (atomically) and return their metrics.

The database records the key schema it was keyed with (SQLite's user_version). A store keyed
with an older schema is re-keyed when opened: each row's key is recomputed from its stored
config, its run folder renamed, and `sweep.json`'s key list mapped, so finished runs stay found.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from moelab.config import KEY_SCHEMA, RunConfig, from_dict, resolve, run_key, to_dict
from moelab.errors import MoelabError
from moelab.io import atomic_write_json
from moelab.runs.folder import Metrics, read_metrics

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
        if self.folder.exists() and not self.folder.is_dir():
            raise MoelabError(f"{self.folder}: a file, not a sweep folder; give a folder (--out)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.folder / "store.sqlite", isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(SCHEMA)
        except PermissionError:
            raise MoelabError(f"{self.folder}: not writable; give a folder you can write to (--out)") from None
        except sqlite3.DatabaseError as err:  # damaged, truncated or not SQLite at all: touch nothing
            raise MoelabError(f"{self.folder / 'store.sqlite'}: not a readable sweep store ({err}); it is damaged. "
                              "Nothing was changed: move it aside to start the sweep afresh (finished runs' "
                              "metrics.json in runs/ are adopted again), or restore it from a copy") from None
        self.notes: list[str] = []  # what opening or recovering changed, for the user
        schema = self.db.execute("PRAGMA user_version").fetchone()[0]
        if schema != KEY_SCHEMA:
            self._rekey(schema)

    @classmethod
    def existing(cls, folder: str | Path, what: str) -> Store:
        """The store of a folder a sweep wrote; a MoelabError naming `what` (the option or
        argument) when there is none, rather than a new empty store."""
        if not (Path(folder) / "store.sqlite").exists():
            raise MoelabError(f"{what} {folder}: no store.sqlite here; give the folder a sweep wrote")
        return cls(folder)

    def close(self) -> None:
        self.db.close()

    def run_dir(self, key: str) -> Path:
        return self.folder / "runs" / key

    def _write(self, sql: str, args: tuple) -> None:
        with self.db:  # one transaction
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, args)

    def _rekey(self, old_schema: int) -> None:
        """Recompute every key from its stored config (idempotent: a crash midway redoes the rest)."""
        mapping: dict[str, str] = {}
        rows = self.db.execute("SELECT key, config, status FROM runs").fetchall()
        taken = {key for key, _, _ in rows}
        for key, config, status in rows:
            try:
                new = run_key(resolve(from_dict(RunConfig, json.loads(config))))
            except MoelabError as err:
                raise MoelabError(f"{self.folder / 'store.sqlite'}: run {key} has a config this version "
                                  f"cannot read ({err}); move the sweep folder away to start over") from None
            if new == key:
                continue
            if new in taken:  # two old runs now share a key (they differed only in, e.g., threads)
                self.notes.append(f"run {key} duplicates {new} under the new key; kept {new}")
                self._write("DELETE FROM runs WHERE key = ?", (key,))
                continue
            old_dir, new_dir = self.run_dir(key), self.run_dir(new)
            if old_dir.exists() and not new_dir.exists():
                old_dir.rename(new_dir)
            self._write("UPDATE runs SET key = ? WHERE key = ?", (new, key))
            taken.add(new)
            mapping[key] = new
        meta_path = self.folder / "sweep.json"
        if mapping and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            for field in ("keys", "reported"):
                if field in meta:
                    meta[field] = [mapping.get(k, k) for k in meta[field]]
            for record in meta.get("selection") or []:
                for candidate in record["candidates"]:
                    candidate["keys"] = [mapping.get(k, k) for k in candidate["keys"]]
            atomic_write_json(meta_path, meta)
        self.db.execute(f"PRAGMA user_version = {KEY_SCHEMA}")
        if mapping:
            self.notes.append(f"re-keyed {len(mapping)} runs from key schema {old_schema} to {KEY_SCHEMA}")

    def write_sweep_meta(self, sweep, keys: list[str], reported: list[str] | None = None,
                         selection: list[dict] | None = None) -> None:
        """sweep.json: the sweep's name, description and run keys; with a selection, the keys of
        the reported runs and each configuration's candidates and choice."""
        meta = {"name": sweep.name, "description": sweep.description, "keys": keys}
        if reported is not None:
            meta |= {"reported": reported, "selection": selection}
        atomic_write_json(self.folder / "sweep.json", meta)

    def add(self, key: str, label: str, config) -> None:
        """Register a run as pending unless the store already knows it; a known run keeps its status
        and metrics and takes the label the sweep gives it now (labels are derived from the config,
        and a store resumed by a newer moelab should not mix two namings in one report)."""
        self._write("INSERT INTO runs (key, label, config, status, updated) VALUES (?, ?, ?, 'pending', ?) "
                    "ON CONFLICT(key) DO UPDATE SET label = excluded.label",
                    (key, label, json.dumps(to_dict(config)), time.time()))

    def recover(self, keys: list[str], retry_failed: bool) -> None:
        """Before (re)starting: adopt every run whose complete metrics file is in its folder, whatever
        its row says (it landed after the driver stopped, or a broken pool was blamed for it); put
        interrupted runs, and runs whose metrics file is damaged, back to pending; restore a done
        run's damaged metrics file from the store's copy; optionally retry the failed ones."""
        for key, status in self.statuses(keys).items():
            metrics_file = self.run_dir(key) / "metrics.json"
            metrics, problem = None, None
            if metrics_file.exists():
                try:
                    metrics = read_metrics(metrics_file)
                except MoelabError as err:
                    problem = str(err)
            if status == "done":
                if problem is not None or (not metrics_file.exists() and self.run_dir(key).exists()):
                    atomic_write_json(metrics_file, self.metrics(key))
                    self.notes.append(f"{metrics_file}: damaged or missing; restored from the store")
            elif metrics is not None:
                self.mark_done(key, metrics)
            elif status == "running" or (status == "failed" and retry_failed) or problem is not None:
                if problem is not None:
                    metrics_file.unlink()
                    self.notes.append(f"{problem.split(';')[0]}; removed, the run will be redone")
                self._write("UPDATE runs SET status = 'pending', updated = ? WHERE key = ?", (time.time(), key))

    def reuse(self, sources: list[Store], keys: list[str]) -> list[str]:
        """Adopt, for each pending run of `keys`, a finished run of the same key from another
        sweep's store (the key names everything that changes a run's results); the run folder is
        not copied, the metrics are. Returns the keys adopted, each noted with its source."""
        adopted = []
        for key, status in self.statuses(keys).items():
            if status != "pending":
                continue
            for source in sources:
                if source.statuses([key]).get(key) == "done":
                    metrics = source.metrics(key)
                    self.mark_done(key, metrics)
                    # bits move between CPU types at one run key: say where the adopted run trained
                    self.notes.append(f"run {key} reused from {source.folder} (trained on {metrics.get('device', 'an unrecorded device')})")
                    adopted.append(key)
                    break
        return adopted

    def mark_pending(self, key: str) -> None:
        self._write("UPDATE runs SET status = 'pending', updated = ? WHERE key = ?", (time.time(), key))

    def mark_running(self, key: str) -> None:
        self._write("UPDATE runs SET status = 'running', attempts = attempts + 1, updated = ? "
                    "WHERE key = ?", (time.time(), key))

    def mark_done(self, key: str, metrics: Metrics) -> None:
        self._write("UPDATE runs SET status = 'done', reason = NULL, metrics = ?, updated = ? "
                    "WHERE key = ?", (json.dumps(metrics), time.time(), key))

    def mark_failed(self, key: str, reason: str) -> None:
        self._write("UPDATE runs SET status = 'failed', reason = ?, updated = ? WHERE key = ?",
                    (reason, time.time(), key))

    def metrics(self, key: str) -> dict | None:
        row = self.db.execute("SELECT metrics FROM runs WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

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
