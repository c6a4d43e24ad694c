"""The Redis store of the generation cache: every actor on every machine of a cluster shares
finished generations. Same keys and same value text as the SQLite store (`GenerationCache` does
both); one Redis hash per entry holds the stage, the creation time and the value.

A dropped connection is retried with backoff (redis-py's own retry); still failing, the call
raises `CacheUnavailableError`, which becomes an error on the record that needed it. The password
comes from the URL or from MMIE_REDIS_PASSWORD and never appears in a message.
"""

from __future__ import annotations

import os
from typing import Any

from .cache import CacheStore, public_location
from .errors import CacheUnavailableError, ConfigError, MissingDependency

PREFIX = "mmie:gen:"
PASSWORD_ENV = "MMIE_REDIS_PASSWORD"


class RedisStore(CacheStore):
    def __init__(self, url: str, *, retries: int = 5, socket_timeout_s: float = 10.0):
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise MissingDependency("redis", "redis", "the Redis generation cache") from None
        self.location = public_location(url)
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        kwargs: dict[str, Any] = {}
        if os.environ.get(PASSWORD_ENV) and "@" not in url:
            kwargs["password"] = os.environ[PASSWORD_ENV]
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
                retry_on_error=list(self._errors),
                decode_responses=True,
                **kwargs,
            )
            self._redis.ping()
        except ValueError as exc:
            raise ConfigError(f"bad Redis cache URL {self.location}: {exc}") from None
        except redis.RedisError as exc:
            raise ConfigError(f"the Redis generation cache {self.location} cannot be used ({type(exc).__name__}: "
                              f"{exc}); start it, fix the URL, or run with --no-cache") from None

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except self._errors as exc:
            raise CacheUnavailableError(
                f"generation cache {self.location}: {what} failed after retries ({type(exc).__name__}: {exc})"
            ) from None

    def get(self, key: str) -> str | None:
        return self._call("read", self._redis.hget, PREFIX + key, "value")

    def put(self, key: str, stage: str, created: float, value: str) -> None:
        mapping = {"stage": stage, "created": repr(created), "value": value}
        self._call("write", lambda: self._redis.hset(PREFIX + key, mapping=mapping))

    def _entries(self):
        for name in self._redis.scan_iter(match=PREFIX + "*", count=1000):
            yield name

    def info(self) -> dict[str, Any]:
        stages: dict[str, dict[str, int]] = {}
        for name in self._call("scan", lambda: list(self._entries())):
            pipe = self._redis.pipeline()
            pipe.hget(name, "stage")
            pipe.hstrlen(name, "value")
            stage, size = self._call("read", pipe.execute)
            slot = stages.setdefault(stage or "?", {"entries": 0, "value_bytes": 0})
            slot["entries"] += 1
            slot["value_bytes"] += size or 0
        return {
            "path": self.location,
            "entries": sum(s["entries"] for s in stages.values()),
            "stages": dict(sorted(stages.items())),
        }

    def clear(self, stage: str | None) -> int:
        removed = 0
        for name in self._call("scan", lambda: list(self._entries())):
            if stage is None or self._redis.hget(name, "stage") == stage:
                removed += self._call("delete", self._redis.delete, name)
        return removed

    def close(self) -> None:
        self._redis.close()
