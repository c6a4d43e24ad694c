"""The one generation cache, over a pluggable store: SQLite in WAL mode (the default, shared safely
by the processes of one machine) or Redis (shared by every machine of a cluster).

Keys are hashes of canonical JSON (sorted keys, no whitespace), so dict order never matters and
any change to a component changes the key. Secrets and server addresses are never part of a key
or a value: callers pass only identities (see `cache_key`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import ConfigError
from .redact import redact

log = logging.getLogger(__name__)

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


def is_redis_url(location: str | Path | None) -> bool:
    return isinstance(location, str) and location.startswith(("redis://", "rediss://", "unix://"))


def public_location(location: str | Path | None) -> str:
    """The cache's location as it may be printed: a password in a Redis URL is masked."""
    if location is None:
        return str(default_cache_path())
    text = str(location)
    return redact(text) if is_redis_url(text) else text


class CacheStore(ABC):
    """Where the cache keeps its entries: key -> (stage, JSON text). The keys, the values and the
    policy (what a damaged entry means, when to go off the event loop) are `GenerationCache`'s;
    a store only moves bytes. `skippable` are the errors after which a call goes on without the
    cache (warned once); any other error fails the record that hit it."""

    location: str
    skippable: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def get(self, key: str) -> str | None: ...

    @abstractmethod
    def put(self, key: str, stage: str, created: float, value: str) -> None: ...

    @abstractmethod
    def info(self) -> dict[str, Any]: ...

    @abstractmethod
    def clear(self, stage: str | None) -> int: ...

    def close_thread(self) -> None:
        """Release what the calling thread holds (a SQLite connection is per thread)."""

    def close(self) -> None:
        self.close_thread()


class SQLiteStore(CacheStore):
    """The embedded default: one file, WAL mode, one connection per thread, shared safely by every
    process of the machine (local runs, Ray actors on one node)."""

    skippable = (sqlite3.Error,)

    def __init__(self, path: Path):
        self.path = path
        self.location = str(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(_unusable(self.path.parent, f"cannot create the cache folder: {exc.strerror or exc}")) from None
        for target in (self.path.parent, self.path):
            if target.exists() and not os.access(target, os.W_OK):
                raise ConfigError(_unusable(self.path, f"{target} is not writable"))
        try:
            conn = self._connect()
            conn.execute(
                "CREATE TABLE IF NOT EXISTS generations ("
                " key TEXT PRIMARY KEY, stage TEXT NOT NULL, created REAL NOT NULL,"
                " value TEXT NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS generations_stage ON generations(stage)")
        except sqlite3.Error as exc:
            self.close_thread()
            raise ConfigError(_unusable(self.path, f"{type(exc).__name__}: {exc}")) from None

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode: each statement is its own short transaction, so writers from other
            # processes wait at most `timeout` seconds for the lock instead of failing.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> str | None:
        row = self._connect().execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, stage: str, created: float, value: str) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO generations (key, stage, created, value) VALUES (?, ?, ?, ?)",
            (key, stage, created, value),
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

    def clear(self, stage: str | None) -> int:
        conn = self._connect()
        if stage is None:
            removed = conn.execute("DELETE FROM generations").rowcount
        else:
            removed = conn.execute("DELETE FROM generations WHERE stage = ?", (stage,)).rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close_thread(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def open_store(location: str | Path | None) -> CacheStore:
    """A SQLite file path (the default) or a `redis://` URL."""
    if is_redis_url(location):
        from .cache_redis import RedisStore

        return RedisStore(str(location))
    return SQLiteStore(Path(location) if location else default_cache_path())


class GenerationCache:
    """The one generation cache: key -> JSON value, over a pluggable store (SQLite by default,
    Redis across machines); the same keys and the same value text in every store.

    The event loop never waits on the store: `aget`/`aput` run on one worker thread of the
    cache's own. A damaged entry never fails a record: an unreadable entry is a miss (and is
    overwritten). A SQLite file that stops working mid-run is warned about once and skipped; a
    Redis server still unreachable after retries fails the record that needed it (resume redoes
    it). A store that cannot be opened at all is one `ConfigError`, raised before any model starts.
    """

    def __init__(self, path: str | Path | None = None, *, enabled: bool = True, store: CacheStore | None = None):
        self.enabled = enabled
        self.location = public_location(store.location if store else path)
        self.path = Path(path) if path and not is_redis_url(path) else (None if path else default_cache_path())
        self._executor: ThreadPoolExecutor | None = None
        self._warned: set[str] = set()
        self.store: CacheStore | None = None
        if enabled:
            self.store = store or open_store(path)

    def _warn_once(self, what: str, exc: BaseException) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("generation cache %s: %s failed (%s: %s); continuing without it for such calls",
                        self.location, what, type(exc).__name__, exc)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None for a miss, an unreadable entry or a failing SQLite file."""
        if self.store is None:
            return None
        try:
            text = self.store.get(key)
        except self.store.skippable as exc:
            self._warn_once("read", exc)
            return None
        if text is None:
            return None
        try:
            value = json.loads(text)
        except (TypeError, ValueError, RecursionError) as exc:
            log.warning("generation cache %s: entry %s is unreadable (%s); recomputing it", self.location, key[:12], exc)
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, stage: str, value: dict[str, Any]) -> None:
        if self.store is None:
            return
        try:
            self.store.put(key, stage, time.time(), json.dumps(value, ensure_ascii=True))
        except self.store.skippable as exc:
            self._warn_once("write", exc)

    def _worker(self) -> ThreadPoolExecutor:
        # Not tied to an event loop: the same cache serves any number of `asyncio.run`s.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmie-cache")
        return self._executor

    async def aget(self, key: str) -> dict[str, Any] | None:
        if self.store is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._worker(), self.get, key)

    async def aput(self, key: str, stage: str, value: dict[str, Any]) -> None:
        if self.store is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._worker(), self.put, key, stage, value)

    def info(self) -> dict[str, Any]:
        if self.store is None:
            return {"path": self.location, "enabled": False}
        return self.store.info()

    def clear(self, stage: str | None = None) -> int:
        return self.store.clear(stage) if self.store is not None else 0

    def close(self) -> None:
        if self.store is None:
            return
        if self._executor is not None:
            self._executor.submit(self.store.close_thread).result()
            self._executor.shutdown(wait=True)
            self._executor = None
        self.store.close()


def _unusable(path: Path, why: str) -> str:
    return (f"the generation cache {path} cannot be used ({why}); fix it, remove it "
            f"(`mmie-pipe cache clear --path {path}` also works on a damaged file), point "
            "runtime.cache_path or MMIE_CACHE_DIR elsewhere, or run with --no-cache")


def reset_damaged(path: Path) -> bool:
    """Move a cache file SQLite cannot read aside (with its WAL files); True if it was damaged."""
    try:
        conn = sqlite3.connect(path, timeout=30.0)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            ok = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    except sqlite3.Error:
        ok = False
    if ok:
        return False
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            os.replace(part, Path(str(path) + suffix + ".damaged"))
    return True
