"""`--executor ray` on a real local Ray cluster, with OpenAI-compatible latency servers standing in
for model replicas: the same outputs as a local run, a killed actor, an interrupted run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from distributed_helpers import read_predictions, write_input, write_pipeline  # noqa: E402
from latency_server import LatencyServer  # noqa: E402
from mmie_pipe.distributed import RayExecutor  # noqa: E402
from mmie_pipe.pipeline import load_pipeline, validate_pipeline  # noqa: E402
from mmie_pipe.runner import Runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local cluster for the module (num_cpus=2: the machine is shared)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def replicas():
    with LatencyServer(latency_s=0.3, slots=4) as a, LatencyServer(latency_s=0.3, slots=4) as b:
        yield [a, b]


def config_of(path: Path, **overrides):
    raw, _ = load_pipeline(str(path))
    for key, value in overrides.items():
        raw.setdefault("runtime", {})[key] = value
    report = validate_pipeline(raw, str(path))
    assert report.ok, report.problems
    return report.config


def test_ray_run_after_a_local_run_makes_no_calls_and_writes_the_same_bytes(ray_cluster, replicas, tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    pipe = write_pipeline(tmp_path / "p.yaml", [r.base_url for r in replicas], cache_path=cache)
    data = write_input(tmp_path / "in.jsonl", 20, bad_line_at=7)

    local = asyncio.run(Runner(config_of(pipe)).run(data, tmp_path / "local"))
    assert local.calls.calls == 20 and local.errors == 1
    assert replicas[0].requests > 0 and replicas[1].requests > 0  # balanced over both base URLs

    executor = RayExecutor(config_of(pipe, executor="ray"))
    summary = asyncio.run(executor.run(data, tmp_path / "ray"))
    assert summary.calls.calls == 0 and summary.calls.cache_hits == 20
    assert summary.records == 21 and summary.errors == 1
    assert (tmp_path / "ray" / "predictions.jsonl").read_bytes() == (tmp_path / "local" / "predictions.jsonl").read_bytes()
    rows = read_predictions(tmp_path / "ray")
    assert [r["line"] for r in rows] == list(range(1, 22))
    assert rows[7]["errors"][0]["stage"] == "input"  # the bad line's error stays on its record
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["executor"]["kind"] == "ray" and manifest["executor"]["workers"]
    assert manifest["attempts"][-1]["cache_hits"] == 20


def _actor_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "PipelineWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_killed_actor_is_replaced_and_its_chunk_retried_without_loss_or_duplicates(ray_cluster, replicas, tmp_path):
    pipe = write_pipeline(tmp_path / "p.yaml", [r.base_url for r in replicas], cache_path=str(tmp_path / "c.sqlite"))
    data = write_input(tmp_path / "in.jsonl", 64)
    killed: list[int] = []

    def kill_one_actor_mid_run() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and sum(r.requests for r in replicas) < 8:
            time.sleep(0.05)
        actors = _actor_processes()
        if actors:
            killed.append(actors[0].pid)
            actors[0].send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_one_actor_mid_run)
    killer.start()
    executor = RayExecutor(config_of(pipe, executor="ray"))
    summary = asyncio.run(executor.run(data, tmp_path / "ray"))
    killer.join()
    assert killed, "no actor process was found to kill"
    rows = read_predictions(tmp_path / "ray")
    assert [r["line"] for r in rows] == list(range(1, 65))  # every record once, in input order
    assert summary.ok == 64 and summary.errors == 0
    workers = {w["pid"] for w in executor.executor_info()["workers"]}
    assert killed[0] not in workers or len(workers) >= 2
    assert len(workers) >= 2  # the replacement (or the surviving actor) finished the killed actor's chunks
    # Cross-check against a local run on the same cache: same bytes, nothing left to compute.
    local = asyncio.run(Runner(config_of(pipe)).run(data, tmp_path / "local"))
    assert local.calls.calls == 0
    assert (tmp_path / "local" / "predictions.jsonl").read_bytes() == (tmp_path / "ray" / "predictions.jsonl").read_bytes()


def test_an_interrupted_ray_run_resumes(ray_cluster, tmp_path):
    with LatencyServer(latency_s=0.5, slots=1) as server:
        pipe = write_pipeline(tmp_path / "p.yaml", [server.base_url], concurrency=1, batch_size=2,
                              cache_path=str(tmp_path / "c.sqlite"))
        data = write_input(tmp_path / "in.jsonl", 24)
        out = tmp_path / "ray"
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mmie_pipe.cli", "run", str(pipe), "--input", str(data), "--output", str(out),
             "--executor", "ray", "--ray-address", ray_cluster, "--replicas", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        predictions = out / "predictions.jsonl"
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if predictions.exists() and len(predictions.read_bytes().splitlines()) >= 4:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)  # the hardest interruption: no clean-up at all
        proc.communicate(timeout=120)
        written = len(read_predictions(out))
        assert 4 <= written < 24
        requests_before = server.requests

        resumed = asyncio.run(RayExecutor(config_of(pipe, executor="ray")).run(data, out))
        assert resumed.skipped_done >= 4
        assert resumed.skipped_done + resumed.records == 24
        rows = read_predictions(out)
        assert [r["line"] for r in rows] == list(range(1, 25)) and not any(r.get("errors") for r in rows)
        assert server.requests - requests_before <= 24 - resumed.skipped_done


def test_each_actor_gets_its_own_share_of_the_replicas_and_keeps_it_after_a_restart():
    from mmie_pipe.distributed.worker import ReplicaLedger, assign_endpoints

    config = {"backends": {"llm": {"kind": "openai", "base_urls": ["u0", "u1", "u2", "u3"]}, "other": {"kind": "fake"}}}
    shares = [assign_endpoints(config, i, 2)["backends"]["llm"]["base_urls"] for i in range(2)]
    assert shares == [["u0", "u2"], ["u1", "u3"]]
    assert [assign_endpoints(config, i, 8)["backends"]["llm"]["base_urls"] for i in (0, 5)] == [["u0"], ["u1"]]
    ledger = ReplicaLedger()
    assert [ledger.claim("a"), ledger.claim("b"), ledger.claim("a")] == [0, 1, 0]  # a restarted actor keeps its number


def test_each_cpu_actor_starts_and_stops_its_own_llama_server(ray_cluster, tmp_path):
    """The CPU replica path: `llama_server` with no base URL, so every actor spawns its own server
    with the embedded model; each serves only its actor and goes away with it."""
    from mmie_pipe.adapters.llama_server import find_server_binary, resolve_model_file
    from mmie_pipe.errors import MmieError

    try:
        find_server_binary()
        resolve_model_file("embedded:smollm2")
    except MmieError as exc:
        pytest.skip(f"llama-server or the embedded model is missing: {exc}")
    spec = {
        "name": "embedded-replicas",
        "backends": {"llm": {"kind": "llama_server", "model": "embedded:smollm2", "parallel": 2, "threads": 1}},
        "stages": [{"stage": "extract.v1", "backend": "llm", "params": {"shots": 2, "selection": "first", "max_tokens": 24}}],
        "runtime": {"batch_size": 2, "cache_path": str(tmp_path / "c.sqlite"), "ray": {"cpus_per_replica": 0.5, "replicas": 2}},
    }
    pipe = tmp_path / "p.yaml"
    pipe.write_text(json.dumps(spec))
    data = write_input(tmp_path / "in.jsonl", 8, bad_line_at=3)
    executor = RayExecutor(config_of(pipe, executor="ray"))
    summary = asyncio.run(executor.run(data, tmp_path / "ray"))
    assert summary.records == 9 and summary.errors == 1 and summary.ok == 8
    rows = read_predictions(tmp_path / "ray")
    assert [r["line"] for r in rows] == list(range(1, 10))
    assert all(isinstance(r.get("entities"), list) for i, r in enumerate(rows) if i != 3)
    servers = [w["backends"]["llm"]["server"] for w in executor.executor_info()["workers"]]
    assert len(servers) == 2 and len({s["port"] for s in servers}) == 2 and len({s["pid"] for s in servers}) == 2

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.time() + 30  # the pool's actors exit after the run; their servers go with them
    while time.time() < deadline and any(running(s["pid"]) for s in servers):
        time.sleep(0.2)
    assert not any(running(s["pid"]) for s in servers)
