"""The Redis store of the generation cache against a real `redis-server` on loopback: the same
keys and values as SQLite, two runs sharing it, a lost connection, and a password kept out of
every output."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

from distributed_helpers import read_predictions, write_input, write_pipeline  # noqa: E402
from latency_server import LatencyServer  # noqa: E402
from mmie_pipe.cache import GenerationCache  # noqa: E402
from mmie_pipe.cache_redis import PREFIX  # noqa: E402
from mmie_pipe.model_io import ModelResponse  # noqa: E402
from mmie_pipe.pipeline import load_pipeline, validate_pipeline  # noqa: E402
from mmie_pipe.runner import Runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "hunter2-redis-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, password: str | None = None):
        self.folder, self.password, self.port = folder, password, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=self.password)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def replica():
    with LatencyServer(latency_s=0.1, slots=8) as server:
        yield server


def config_of(path: Path, **runtime):
    raw, _ = load_pipeline(str(path))
    raw.setdefault("runtime", {}).update(runtime)
    report = validate_pipeline(raw, str(path))
    assert report.ok, report.problems
    return report.config


def test_redis_holds_the_same_keys_and_values_as_sqlite(redis_server, replica, tmp_path):
    pipe = write_pipeline(tmp_path / "p.yaml", [replica.base_url])
    data = write_input(tmp_path / "in.jsonl", 12)
    asyncio.run(Runner(config_of(pipe, cache_path=redis_server.url)).run(data, tmp_path / "r"))
    asyncio.run(Runner(config_of(pipe, cache_path=str(tmp_path / "c.sqlite"))).run(data, tmp_path / "s"))
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    in_redis = {k.removeprefix(PREFIX): client.hget(k, "value") for k in client.scan_iter(PREFIX + "*")}
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        in_sqlite = dict(conn.execute("SELECT key, value FROM generations").fetchall())
    assert len(in_redis) == 12 and in_redis == in_sqlite
    assert read_predictions(tmp_path / "r") == read_predictions(tmp_path / "s")
    info = GenerationCache(redis_server.url).info()
    assert info["entries"] == 12 and info["stages"]["extract"]["entries"] == 12


def test_two_runs_share_the_redis_cache_without_corruption_and_keep_the_password_out(tmp_path, replica):
    server = RedisServer(tmp_path, password=PASSWORD).start()
    try:
        pipe = write_pipeline(tmp_path / "p.yaml", [replica.base_url])
        data = write_input(tmp_path / "in.jsonl", 30)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        procs = [
            subprocess.Popen([sys.executable, "-m", "mmie_pipe.cli", "run", str(pipe), "--input", str(data),
                              "--output", str(tmp_path / f"run{i}"), "--cache", server.url],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        first, second = (tmp_path / "run0" / "predictions.jsonl"), (tmp_path / "run1" / "predictions.jsonl")
        assert first.read_bytes() == second.read_bytes()
        client = redis.Redis(port=server.port, password=PASSWORD, decode_responses=True)
        keys = list(client.scan_iter(PREFIX + "*"))
        assert len(keys) == 30
        for key in keys:  # every entry whole and readable
            ModelResponse.model_validate(json.loads(client.hget(key, "value")))
        # A third run is all cache hits.
        summary = asyncio.run(Runner(config_of(pipe, cache_path=server.url)).run(data, tmp_path / "run2"))
        assert summary.calls.calls == 0 and summary.calls.cache_hits == 30
        written = [*(o for pair in outputs for o in pair)]
        for run in ("run0", "run1", "run2"):
            written += [(tmp_path / run / name).read_text() for name in ("manifest.json", "predictions.jsonl")]
        assert not any(PASSWORD in text for text in written)
        assert "[redacted]" in (tmp_path / "run0" / "manifest.json").read_text()
    finally:
        server.stop()


def test_a_lost_redis_connection_fails_only_the_records_that_needed_it_and_resume_redoes_them(tmp_path, replica):
    server = RedisServer(tmp_path).start()
    try:
        pipe = write_pipeline(tmp_path / "p.yaml", [replica.base_url], batch_size=2, concurrency=2)
        data = write_input(tmp_path / "in.jsonl", 16)
        config = config_of(pipe, cache_path=server.url)
        runner = Runner(config)

        async def run_and_lose_redis():
            task = asyncio.create_task(runner.run(data, tmp_path / "out"))
            while replica.requests < 4:
                await asyncio.sleep(0.02)
            server.stop()  # the server goes away mid-run and does not come back in time
            return await task

        summary = asyncio.run(run_and_lose_redis())
        rows = read_predictions(tmp_path / "out")
        assert [r["line"] for r in rows] == list(range(1, 17))  # no record lost
        failed = [r for r in rows if r.get("errors")]
        assert failed and summary.errors == len(failed) and summary.ok >= 1
        assert all("generation cache" in r["errors"][0]["reason"] and "after retries" in r["errors"][0]["reason"]
                   for r in failed)

        server.start()  # back on the same port (empty: it kept nothing on disk)
        resumed = asyncio.run(Runner(config_of(pipe, cache_path=server.url)).run(data, tmp_path / "out"))
        assert resumed.skipped_done == 16 - len(failed) and resumed.errors == 0
        rows = read_predictions(tmp_path / "out")
        assert [r["line"] for r in rows] == list(range(1, 17)) and not any(r.get("errors") for r in rows)
    finally:
        server.stop()


def test_an_unreachable_redis_is_refused_before_any_record(tmp_path):
    from mmie_pipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"redis://:\[redacted\]@127.0.0.1"):
        GenerationCache(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
