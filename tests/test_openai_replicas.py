"""The openai backend over several base URLs (replicas of one model): requests are shared out by
how busy each replica is, and the URLs are operational (a run may resume on other replicas)."""

from __future__ import annotations

import asyncio

from distributed_helpers import read_predictions, write_input, write_pipeline
from latency_server import LatencyServer
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.runner import Runner


def config_of(path, cache):
    raw, _ = load_pipeline(str(path))
    raw["runtime"]["cache_path"] = str(cache)
    return validate_pipeline(raw, str(path)).config


def test_requests_are_shared_over_replicas_by_load(tmp_path):
    with LatencyServer(latency_s=0.2, slots=2) as a, LatencyServer(latency_s=0.2, slots=2) as b:
        pipe = write_pipeline(tmp_path / "p.yaml", [a.base_url, b.base_url], batch_size=8, concurrency=4)
        data = write_input(tmp_path / "in.jsonl", 16)
        summary = asyncio.run(Runner(config_of(pipe, tmp_path / "c.sqlite")).run(data, tmp_path / "out"))
        assert summary.ok == 16
        assert a.requests + b.requests == 16
        assert abs(a.requests - b.requests) <= 2
        assert a.peak_in_flight == 2 and b.peak_in_flight == 2  # both replicas were kept full


def test_a_run_resumes_on_other_replicas(tmp_path):
    data = write_input(tmp_path / "in.jsonl", 6)
    with LatencyServer(latency_s=0.05, slots=2) as a:
        pipe = write_pipeline(tmp_path / "p.yaml", [a.base_url])
        asyncio.run(Runner(config_of(pipe, tmp_path / "c.sqlite")).run(data, tmp_path / "out", limit=3))
    with LatencyServer(latency_s=0.05, slots=2) as b, LatencyServer(latency_s=0.05, slots=2) as c:
        pipe = write_pipeline(tmp_path / "p.yaml", [b.base_url, c.base_url])
        summary = asyncio.run(Runner(config_of(pipe, tmp_path / "c.sqlite")).run(data, tmp_path / "out"))
        assert summary.skipped_done == 3 and b.requests + c.requests == 3
    assert [r["line"] for r in read_predictions(tmp_path / "out")] == list(range(1, 7))
