"""The one generation cache: SQLite in WAL mode, shared safely by concurrent processes.

Keys are hashes of canonical JSON (sorted keys, no whitespace), so dict order never matters and
any change to a component changes the key. Secrets and server addresses are never part of a key
or a value: callers pass only identities (see `cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMA_VERSION = 1


def default_cache_path() -> Path:
    env = os.environ.get("MMIE_CACHE_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "mmie-pipe"
    return base / "generations.sqlite"


def canonical_json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, BaseModel):
            return obj.model_dump(mode="json")
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cannot put {type(obj).__name__} in a cache key")

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)


def cache_key(
    *,
    backend_kind: str,
    model_identity: dict[str, Any],
    request: BaseModel | dict[str, Any],
    stage: str,
    stage_version: int | str,
) -> str:
    """Hash of everything that can change a generation. `model_identity` holds the model name plus
    revision or file hash and the adapter identity; never keys or base URLs."""
    payload = {
        "v": SCHEMA_VERSION,
        "backend": backend_kind,
        "model": model_identity,
        "request": request,
        "stage": [stage, str(stage_version)],
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class GenerationCache:
    """Key -> JSON value store. One connection per thread; WAL lets readers and a writer coexist."""

    def __init__(self, path: str | Path | None = None, *, enabled: bool = True):
        self.path = Path(path) if path else default_cache_path()
        self.enabled = enabled
        self._local = threading.local()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS generations ("
                    " key TEXT PRIMARY KEY, stage TEXT NOT NULL, created REAL NOT NULL,"
                    " value TEXT NOT NULL)"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS generations_stage ON generations(stage)")

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode: each statement is its own short transaction, so writers from other
            # processes wait at most `timeout` seconds for the lock instead of failing.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        row = self._connect().execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, stage: str, value: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._connect().execute(
            "INSERT OR REPLACE INTO generations (key, stage, created, value) VALUES (?, ?, ?, ?)",
            (key, stage, time.time(), json.dumps(value, ensure_ascii=False)),
        )

    def info(self) -> dict[str, Any]:
        rows = self._connect().execute(
            "SELECT stage, COUNT(*), SUM(LENGTH(value)) FROM generations GROUP BY stage ORDER BY stage"
        ).fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())
        return {
            "path": str(self.path),
            "entries": sum(r[1] for r in rows),
            "bytes_on_disk": size,
            "stages": {r[0]: {"entries": r[1], "value_bytes": r[2] or 0} for r in rows},
        }

    def clear(self, stage: str | None = None) -> int:
        conn = self._connect()
        if stage is None:
            removed = conn.execute("DELETE FROM generations").rowcount
        else:
            removed = conn.execute("DELETE FROM generations WHERE stage = ?", (stage,)).rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
