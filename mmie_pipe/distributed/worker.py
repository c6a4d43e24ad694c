"""The Ray actor of a distributed run: it builds the pipeline's stages and backends once (its own
llama-server, an in-process vLLM engine on its GPU, or clients of OpenAI-compatible replicas) and
then runs whole records, a chunk at a time, through the local runner's `Runner.process`.

Whole records, not single model calls, are the unit of work: a stage decides its requests from
earlier stages' outputs (one question per span, per entity, per pair), so the calls of a record
cannot be laid out as one Ray Data LLM processor per model call (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from pathlib import Path
from typing import Any

from ..calls import CallStats
from ..pipeline import PipelineConfig
from ..record_io import InputLine, error_output
from ..records import Record
from ..runner import Runner


def encode_chunk(items: list[InputLine]) -> bytes:
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


class ChunkResult:
    """What an actor sends back for one chunk: the results in input order, what its calls cost,
    the notes its stages made, and who ran it."""

    def __init__(self, pairs: list[tuple[InputLine, Record | dict[str, Any]]], stats: dict[str, int],
                 notes: list[str], worker: dict[str, Any]):
        self.pairs = pairs
        self.stats = stats
        self.notes = notes
        self.worker = worker


class PipelineWorker:
    """Ray Data calls one instance per actor with batches of one chunk each (`batch_size=1`)."""

    def __init__(self, config: dict[str, Any], run_dir: str, input_dir: str):
        self.runner = Runner(PipelineConfig.model_validate(config))
        self.runner.context.run_dir = Path(run_dir)
        self.runner.context.input_dir = Path(input_dir)
        # One event loop for the actor's life: backends and their clients are bound to it.
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.runner.start())
        self.identity = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "backends": {name: b.describe() for name, b in self.runner.all_backends().items()},
        }

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for blob in batch["chunk"]:
            out.append(pickle.dumps(self.loop.run_until_complete(self._chunk(pickle.loads(blob)))))
        return {"result": out}

    async def _chunk(self, items: list[InputLine]) -> ChunkResult:
        before = _counters(self.runner.stats)
        notes_before = len(self.runner.context.notes)

        async def one(item: InputLine) -> tuple[InputLine, Record | dict[str, Any]]:
            if item.record is None:
                return item, error_output(item)
            return item, await self.runner.process(item.record)

        pairs = list(await asyncio.gather(*(one(item) for item in items)))
        after = _counters(self.runner.stats)
        delta = {k: after[k] - before[k] for k in after}
        return ChunkResult(pairs, delta, self.runner.context.notes[notes_before:], self.identity)

    def __del__(self) -> None:
        # A llama-server this actor started must not outlive it.
        try:
            if not self.loop.is_closed():
                self.loop.run_until_complete(self.runner.close())
                self.loop.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass


def _counters(stats: CallStats) -> dict[str, int]:
    return {
        "calls": stats.calls,
        "cache_hits": stats.cache_hits,
        "shared": stats.shared,
        "reasks": stats.reasks,
        "prompt_tokens": stats.usage.prompt_tokens,
        "completion_tokens": stats.usage.completion_tokens,
    }


def add_counters(stats: CallStats, delta: dict[str, int]) -> None:
    from ..model_io import Usage

    stats.calls += delta["calls"]
    stats.cache_hits += delta["cache_hits"]
    stats.shared += delta["shared"]
    stats.reasks += delta["reasks"]
    stats.usage = stats.usage + Usage(prompt_tokens=delta["prompt_tokens"], completion_tokens=delta["completion_tokens"])
