"""Against the real llama.cpp server serving the embedded SmolLM2 GGUF on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from fault_proxy import FaultProxy
from mmie_pipe.adapters.llama_server import LlamaServerBackend, LlamaServerConfig, LlamaServerProcess, resolve_model_file
from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient
from mmie_pipe.errors import ModelCallError
from mmie_pipe.model_io import Constraint, Message, ModelRequest, Sampling
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.runner import Runner

pytestmark = pytest.mark.server


def root_url(server) -> str:
    return server.base_url.removesuffix("/v1")


def client_for(base_url: str, tmp_path, **config) -> ModelClient:
    backend = OpenAIBackend(OpenAIConfig(model="smollm2", base_url=base_url, flavor="llamacpp", **config))
    return ModelClient(backend, GenerationCache(tmp_path / "cache.sqlite"), stage="test", stage_version=1)


def test_concurrent_requests_overlap_on_parallel_slots(llama_server, tmp_path):
    with FaultProxy(root_url(llama_server)) as proxy:
        client = client_for(proxy.base_url + "/v1", tmp_path, concurrency=4)
        prompts = [f"Tweet: Game {i} tonight between Boston and Chicago\nEntities:" for i in range(12)]

        async def go():
            return await asyncio.gather(*(client.generate(ModelRequest(prompt=p, sampling=Sampling(max_tokens=12))) for p in prompts))

        responses = asyncio.run(go())
    assert len(responses) == 12 and all(r.usage.completion_tokens > 0 for r in responses)
    assert proxy.requests == 12
    assert 2 <= proxy.peak_in_flight <= 4  # bounded, and really concurrent
    assert client.stats.calls == 12 and client.stats.usage.prompt_tokens > 0


def test_json_schema_structured_output(llama_server, tmp_path):
    schema = {
        "type": "object",
        "properties": {"entities": {"type": "array", "items": {"type": "object", "properties": {
            "text": {"type": "string", "maxLength": 20}, "type": {"type": "string", "enum": ["PER", "LOC", "ORG"]}},
            "required": ["text", "type"]}, "maxItems": 3}},
        "required": ["entities"],
    }
    client = client_for(llama_server.base_url, tmp_path)
    request = ModelRequest(
        messages=(Message(role="user", content="List the named entities in: Barack Obama visited Paris"),),
        sampling=Sampling(max_tokens=250),
        constraint=Constraint(json_schema=schema),
    )
    response = asyncio.run(client.generate(request))
    data = json.loads(response.text)
    assert isinstance(data["entities"], list)
    assert all(e["type"] in {"PER", "LOC", "ORG"} for e in data["entities"])


def test_choice_constraint_answers_one_option(llama_server, tmp_path):
    client = client_for(llama_server.base_url, tmp_path)
    options = ("A. person", "B. location", "C. organization", "D. none of the above")
    request = ModelRequest(
        messages=(Message(role="user", content="In 'I flew to Paris', what is Paris? " + " ".join(options)),),
        sampling=Sampling(max_tokens=10),
        constraint=Constraint(choices=options),
    )
    assert asyncio.run(client.generate(request)).text in options


def test_logprobs_chat_and_completion(llama_server, tmp_path):
    client = client_for(llama_server.base_url, tmp_path)
    chat = asyncio.run(client.generate(ModelRequest(
        messages=(Message(role="user", content="Say yes."),), sampling=Sampling(max_tokens=3), top_logprobs=3)))
    comp = asyncio.run(client.generate(ModelRequest(prompt="The capital of France is", sampling=Sampling(max_tokens=3), top_logprobs=3)))
    for response in (chat, comp):
        assert response.logprobs and len(response.logprobs) == response.usage.completion_tokens
        first = response.logprobs[0]
        assert first.logprob <= 0 and 1 <= len(first.top) <= 3
        assert max(first.top.values()) >= first.logprob - 1e-6


def test_cache_hit_makes_no_call(llama_server, tmp_path):
    with FaultProxy(root_url(llama_server)) as proxy:
        client = client_for(proxy.base_url + "/v1", tmp_path)
        request = ModelRequest(prompt="Tweet: hello Rome\nEntities:", sampling=Sampling(max_tokens=8))
        first = asyncio.run(client.generate(request))
        second = asyncio.run(client.generate(request))
    assert proxy.requests == 1
    assert second.cached and second.text == first.text and second.usage.completion_tokens == 0


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried(llama_server, tmp_path, status):
    with FaultProxy(root_url(llama_server), plan=[status, status], retry_after="0") as proxy:
        client = client_for(proxy.base_url + "/v1", tmp_path, max_retries=3, retry_max_wait_s=0.2)
        response = asyncio.run(client.generate(ModelRequest(prompt="Hi", sampling=Sampling(max_tokens=4))))
    assert proxy.requests == 3 and response.usage.completion_tokens > 0


def test_retry_after_header_is_honoured(llama_server, tmp_path):
    with FaultProxy(root_url(llama_server), plan=[429], retry_after="1") as proxy:
        client = client_for(proxy.base_url + "/v1", tmp_path, max_retries=2, retry_max_wait_s=0.01)
        started = time.perf_counter()
        asyncio.run(client.generate(ModelRequest(prompt="Hi", sampling=Sampling(max_tokens=2))))
    assert proxy.requests == 2 and time.perf_counter() - started >= 1.0


def test_request_errors_are_not_retried(llama_server, tmp_path):
    with FaultProxy(root_url(llama_server), plan=[400]) as proxy:
        client = client_for(proxy.base_url + "/v1", tmp_path, max_retries=3, retry_max_wait_s=0.01)
        with pytest.raises(ModelCallError) as info:
            asyncio.run(client.generate(ModelRequest(prompt="Hi", sampling=Sampling(max_tokens=2))))
    assert proxy.requests == 1 and info.value.status == 400


def write_tweets(path, n):
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"t{i}", "text": f"Fans in Boston cheer as the Red Sox win game {i}"}) + "\n")


def ner_config(base_url):
    return validate_pipeline({
        "name": "ner-test",
        "backends": {"llm": {"kind": "openai", "model": "smollm2", "base_url": base_url, "flavor": "llamacpp",
                             "concurrency": 2, "max_retries": 1, "retry_max_wait_s": 0.1, "timeout_s": 60}},
        "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 2, "max_tokens": 24}}],
        # Every record must meet the dead server here; the error budget that would stop the run
        # first has its own tests (tests/reliability/test_rel_exit_codes.py).
        "runtime": {"batch_size": 4, "max_consecutive_failures": 0},
    }).config


def test_server_dying_mid_run_then_resume_completes(tmp_path):
    model = resolve_model_file("embedded:smollm2")
    first = LlamaServerProcess(model, parallel=2, ctx_size=4096)
    first.start()
    port = first.port
    write_tweets(tmp_path / "in.jsonl", 30)
    run_dir = tmp_path / "run"
    predictions = run_dir / "predictions.jsonl"

    def kill_after_some_output():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if predictions.exists() and len(predictions.read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
        first.stop()

    killer = threading.Thread(target=kill_after_some_output)
    killer.start()
    cache = GenerationCache(tmp_path / "cache.sqlite")
    summary = asyncio.run(Runner(ner_config(first.base_url), cache=cache).run(tmp_path / "in.jsonl", run_dir))
    killer.join()
    out = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert len(out) == 30 and summary.ok >= 4 and summary.errors > 0
    errored = [o for o in out if o.get("errors")]
    assert all(o["errors"][0]["kind"] == "model" and o["errors"][0]["stage"] == "extract.v1" for o in errored)
    kept = {o["line"]: o for o in out if not o.get("errors")}

    second = LlamaServerProcess(model, parallel=2, ctx_size=4096, port=port)
    second.start()
    try:
        with FaultProxy(root_url(second)) as proxy:
            resumed = asyncio.run(Runner(ner_config(proxy.base_url + "/v1"), cache=cache).run(tmp_path / "in.jsonl", run_dir))
    finally:
        second.stop()
    final = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert [o["line"] for o in final] == list(range(1, 31))
    assert not [o["errors"] for o in final if o.get("errors")]
    # Only the failed records were asked again (a retry under load may repeat one, hence the set).
    assert resumed.skipped_done == len(kept) and len(set(proxy.bodies)) == len(errored)
    for line, record in kept.items():  # nothing already produced was lost or changed
        assert final[line - 1] == record


def test_embedded_backend_starts_and_stops_its_own_server(tmp_path):
    backend = LlamaServerBackend(LlamaServerConfig(parallel=2, ctx_size=2048))
    client = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="t", stage_version=1)

    async def go():
        await backend.start()
        try:
            return await client.generate(ModelRequest(prompt="Hello", sampling=Sampling(max_tokens=4)))
        finally:
            proc = backend.server.proc
            await backend.close()
            assert proc.poll() is not None

    assert asyncio.run(go()).usage.completion_tokens > 0
    assert len(backend.identity()["file_sha256"]) == 64


def _children(pid: int) -> list[int]:
    import subprocess as sp

    out = sp.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killed_run_leaves_no_server_and_resumes(tmp_path, sig):
    import os
    import signal
    import subprocess as sp
    import sys

    write_tweets(tmp_path / "in.jsonl", 30)
    cmd = [sys.executable, "-m", "mmie_pipe.cli", "run", "ner", "--input", str(tmp_path / "in.jsonl"),
           "--output", str(tmp_path / "run"), "--set", "stages.extract.params.max_tokens=16",
           "--set", "runtime.batch_size=2"]  # small window: records are written one by one
    proc = sp.Popen(cmd, stdout=sp.PIPE, stderr=sp.PIPE, env={**os.environ, "MMIE_CACHE_DIR": str(tmp_path / "cache")})
    predictions = tmp_path / "run" / "predictions.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (predictions.exists() and predictions.stat().st_size > 0):
        time.sleep(0.1)
    servers = _children(proc.pid)
    assert servers, "the run should have started a llama-server"
    proc.send_signal(getattr(signal, sig))
    proc.wait(30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in servers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in servers)
    done_before = len(predictions.read_text().splitlines())
    assert 0 < done_before < 30
    finished = sp.run(cmd, capture_output=True, text=True, env={**os.environ, "MMIE_CACHE_DIR": str(tmp_path / "cache")}, timeout=600)
    assert finished.returncode == 0, finished.stderr
    final = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert [o["line"] for o in final] == list(range(1, 31)) and not any(o.get("errors") for o in final)
