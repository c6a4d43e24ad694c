"""Exit statuses and the error budget, on the real embedded llama-server (through the fault proxy
where a fault is needed)."""

from __future__ import annotations

import asyncio
import json

import pytest

from reliability_helpers import read_predictions, write_posts
from fault_proxy import FaultProxy
from mmie_pipe.adapters.llama_server import LlamaServerBackend, LlamaServerConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.cli import main
from mmie_pipe.errors import ExitCode
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.runner import Runner

pytestmark = pytest.mark.server

SECRET = "sk-reliability-0123456789abcdef"


def root(url: str) -> str:
    return url.removesuffix("/v1")


def test_all_ok_exits_0_and_a_failed_record_exits_1(tmp_path, run_cli):
    source = write_posts(tmp_path / "in.jsonl", 2)
    status, out, _ = run_cli(source, tmp_path / "ok")
    assert status == ExitCode.OK and "2 ok" in out
    with source.open("a") as f:
        f.write("{broken\n")
    status, out, _ = run_cli(source, tmp_path / "ok")
    assert status == ExitCode.RECORD_ERRORS and "2 already done" in out


def test_strict_stop_exits_1(tmp_path, run_cli):
    source = tmp_path / "in.jsonl"
    source.write_text('{broken\n{"id": "a", "text": "Hi Bob"}\n')
    status, _, err = run_cli(source, tmp_path / "run", "--strict")
    assert status == ExitCode.RECORD_ERRORS and "--strict" in err


@pytest.mark.parametrize("fault", [401, 403])
def test_every_call_refused_stops_on_the_error_budget_and_redacts_the_key(tmp_path, run_cli, llama_server, monkeypatch, fault):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    source = write_posts(tmp_path / "in.jsonl", 30)
    with FaultProxy(root(llama_server.base_url), plan=[fault] * 1000, echo_headers=True) as proxy:
        status, out, err = run_cli(source, tmp_path / "run", "--set", "runtime.max_consecutive_failures=4",
                                   "--set", "runtime.batch_size=2", base_url=proxy.base_url + "/v1")
    assert status == ExitCode.STOPPED and "records in a row failed" in err and f"HTTP {fault}" in err
    assert proxy.requests < 30  # not one request per record
    rows = read_predictions(tmp_path / "run")
    assert 4 <= len(rows) < 30 and all(r["errors"][0]["kind"] == "model" for r in rows)
    assert "Bearer" in rows[0]["errors"][0]["reason"]  # the server did echo the header...
    written = (tmp_path / "run" / "predictions.jsonl").read_text() + (tmp_path / "run" / "manifest.json").read_text()
    assert SECRET not in written and SECRET not in out + err  # ...but never the key
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "records in a row failed" in manifest["attempts"][-1]["stopped"]

    # Resumable: with the server reachable again, the same command finishes the run.
    status, out, _ = run_cli(source, tmp_path / "run", "--set", "runtime.max_consecutive_failures=4")
    assert status == ExitCode.OK
    assert [r["line"] for r in read_predictions(tmp_path / "run")] == list(range(1, 31))


def test_without_a_budget_every_record_fails_and_exits_1(tmp_path, run_cli, llama_server):
    source = write_posts(tmp_path / "in.jsonl", 3)
    with FaultProxy(root(llama_server.base_url), plan=[401] * 100) as proxy:
        status, _, _ = run_cli(source, tmp_path / "run", "--set", "runtime.max_consecutive_failures=0",
                               base_url=proxy.base_url + "/v1")
    assert status == ExitCode.RECORD_ERRORS and len(read_predictions(tmp_path / "run")) == 3


def test_connection_refused_stops_on_the_budget(tmp_path, run_cli):
    from mmie_pipe.adapters.llama_server import free_port

    source = write_posts(tmp_path / "in.jsonl", 12)
    status, _, err = run_cli(source, tmp_path / "run", "--set", "backends.llm.max_retries=0",
                             "--set", "runtime.max_consecutive_failures=3", "--set", "runtime.batch_size=1",
                             base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert status == ExitCode.STOPPED and "APIConnectionError" in err
    assert 3 <= len(read_predictions(tmp_path / "run")) < 12


def test_the_runs_own_server_dying_is_named_and_stops_the_run(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 20)
    raw, _ = load_pipeline("ner", overrides=["stages.extract.params.shots=1", "runtime.max_consecutive_failures=3",
                                               "runtime.batch_size=2"])
    config = validate_pipeline(raw).config
    backend = LlamaServerBackend(LlamaServerConfig(parallel=2, ctx_size=2048))

    async def go():
        await backend.start()
        backend.server.proc.kill()  # the server dies under the run
        backend.server.proc.wait()
        try:
            runner = Runner(config, cache=GenerationCache(tmp_path / "c.sqlite"), backends={"llm": backend})
            return await runner.run(source, tmp_path / "run", progress=False)
        finally:
            await backend.close()

    summary = asyncio.run(go())
    assert summary.stopped and "own llama-server exited" in summary.stopped
    rows = read_predictions(tmp_path / "run")
    assert len(rows) < 20 and "own llama-server exited" in rows[0]["errors"][0]["reason"]


def test_an_internal_error_exits_4_not_1(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Runner, "run", broken)
    source = write_posts(tmp_path / "in.jsonl", 1)
    status = main(["run", "ner", "--input", str(source), "--output", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == ExitCode.CRASH and "RuntimeError: a bug" in err and "internal error" in err
