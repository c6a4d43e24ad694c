"""The runner's scheduling: a sliding window, SQLite off the event loop, backends reusable across
event loops."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reliability_helpers import read_predictions, write_posts
from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig
from mmie_pipe.batching import MicroBatcher
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient
from mmie_pipe.model_io import ModelRequest, Sampling
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.runner import Runner

PIPELINE = {
    "name": "t",
    "backends": {"llm": {"kind": "fake"}},
    "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 0}}],
    "runtime": {"batch_size": 4},
}


class OneSlowRecord(FakeBackend):
    """Answers at once, except for the post of day 1, which takes a long while."""

    def __init__(self):
        super().__init__(FakeConfig(concurrency=64), responder=lambda r: "Alice (PER)")
        self.completed: list[str] = []

    async def _generate(self, request):
        slow = "day 1\n" in request.prompt
        await asyncio.sleep(0.6 if slow else 0.005)
        self.completed.append("slow" if slow else "fast")
        return await super()._generate(request)


def test_a_slow_record_does_not_hold_back_new_ones(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 60)
    backend = OneSlowRecord()
    runner = Runner(validate_pipeline(PIPELINE).config, cache=GenerationCache(tmp_path / "c.sqlite"), backends={"llm": backend})
    asyncio.run(runner.run(source, tmp_path / "out", progress=False))
    finished_before_slow = backend.completed.index("slow")
    # With a window that waits on its head, at most batch_size - 1 others could finish meanwhile.
    assert finished_before_slow > 4 * 3
    assert backend.peak_in_flight <= 4  # still never more than batch_size records at once
    assert [r["line"] for r in read_predictions(tmp_path / "out")] == list(range(1, 61))


def test_sqlite_runs_off_the_event_loop_thread(tmp_path, monkeypatch):
    threads: set[str] = set()
    original_get, original_put = GenerationCache.get, GenerationCache.put

    def get(self, key):
        threads.add(threading.current_thread().name)
        return original_get(self, key)

    def put(self, key, stage, value):
        threads.add(threading.current_thread().name)
        return original_put(self, key, stage, value)

    monkeypatch.setattr(GenerationCache, "get", get)
    monkeypatch.setattr(GenerationCache, "put", put)
    source = write_posts(tmp_path / "in.jsonl", 10)
    runner = Runner(validate_pipeline(PIPELINE).config, cache=GenerationCache(tmp_path / "c.sqlite"),
                    backends={"llm": FakeBackend(FakeConfig(reply="Alice (PER)"))})
    summary = asyncio.run(runner.run(source, tmp_path / "out", progress=False))
    assert summary.calls.calls == 10 and threads and threading.main_thread().name not in threads


@pytest.mark.server
def test_one_backend_serves_two_event_loops_under_contention(llama_server, tmp_path):
    backend = OpenAIBackend(OpenAIConfig(model="smollm2", base_url=llama_server.base_url, flavor="llamacpp", concurrency=2))
    client = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="t", stage_version=1)

    async def six(offset: int):
        requests = [ModelRequest(prompt=f"Count to {offset + i}:", sampling=Sampling(max_tokens=4)) for i in range(6)]
        out = await asyncio.gather(*(client.generate(r) for r in requests))
        await backend.close()
        return out

    first = asyncio.run(six(0))
    second = asyncio.run(six(100))  # a new loop: semaphore and HTTP client are made afresh
    assert len(first) == len(second) == 6 and client.stats.calls == 12


def test_micro_batcher_serves_two_event_loops():
    batcher = MicroBatcher(lambda items: [i * 2 for i in items], max_batch=2, max_wait_s=0.001)

    async def go():
        return await asyncio.gather(*(batcher.submit(i) for i in range(7)))

    assert asyncio.run(go()) == [i * 2 for i in range(7)]
    assert asyncio.run(go()) == [i * 2 for i in range(7)]


def test_a_runner_runs_twice_in_two_event_loops(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 6)
    backend = FakeBackend(FakeConfig(reply="Alice (PER)", concurrency=2, delay_s=0.001))
    runner = Runner(validate_pipeline(PIPELINE).config, cache=GenerationCache(tmp_path / "c.sqlite"), backends={"llm": backend})
    asyncio.run(runner.run(source, tmp_path / "a", progress=False))
    summary = asyncio.run(runner.run(source, tmp_path / "b", progress=False))
    assert summary.ok == 6
