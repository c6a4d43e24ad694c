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
    """What an actor sends back for one chunk: the results in input order, the actor's call
    counters so far (chunks run concurrently on an actor, so only its running totals are exact),
    the notes its stages made, and who ran it."""

    def __init__(self, pairs: list[tuple[InputLine, Record | dict[str, Any]]], stats: dict[str, int],
                 notes: list[str], worker: dict[str, Any]):
        self.pairs = pairs
        self.stats = stats
        self.notes = notes
        self.worker = worker


class ReplicaLedger:
    """Hands each actor of the pool its replica number, once: a restarted actor (same actor id,
    new process) gets its old number back, so a killed actor's replacement serves the same
    endpoints. Run as a Ray actor by the driver."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def claim(self, actor_id: str) -> int:
        return self.numbers.setdefault(actor_id, len(self.numbers))


def assign_endpoints(config: dict[str, Any], number: int, replicas: int) -> dict[str, Any]:
    """Actor `number` of `replicas` talks to its own share of each backend's `base_urls`
    (urls[number::replicas]; with fewer URLs than actors, actors share them round-robin), so no
    replica is sent more than one actor's requests while another waits."""
    backends = {}
    for name, spec in config.get("backends", {}).items():
        urls = spec.get("base_urls") or []
        if len(urls) > 1:
            spec = {**spec, "base_urls": urls[number::replicas] or [urls[number % len(urls)]]}
        backends[name] = spec
    return {**config, "backends": backends}


class PipelineWorker:
    """Ray Data calls one instance per actor with batches of one chunk each (`batch_size=1`)."""

    def __init__(self, config: dict[str, Any], run_dir: str, input_dir: str, ledger: Any = None, replicas: int = 1):
        self.number = 0
        if ledger is not None:
            import ray

            self.number = ray.get(ledger.claim.remote(ray.get_runtime_context().get_actor_id()))
            config = assign_endpoints(config, self.number, replicas)
        self.runner = Runner(PipelineConfig.model_validate(config))
        self.runner.context.run_dir = Path(run_dir)
        self.runner.context.input_dir = Path(input_dir)
        self.runner.build_stages()
        self._started: asyncio.Task | None = None
        self.identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "replica": self.number}

    async def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        # Async, so the actor runs two chunks at once on one event loop (its backends are bound to
        # it): while one chunk's last records finish, the next keeps the replica's slots full.
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await self._started
        out = [pickle.dumps(await self._chunk(pickle.loads(blob))) for blob in batch["chunk"]]
        return {"result": out}

    async def _start(self) -> None:
        await self.runner.start()
        self.identity["backends"] = {name: b.describe() for name, b in self.runner.all_backends().items()}

    async def _chunk(self, items: list[InputLine]) -> ChunkResult:
        async def one(item: InputLine) -> tuple[InputLine, Record | dict[str, Any]]:
            if item.record is None:
                return item, error_output(item)
            return item, await self.runner.process(item.record)

        pairs = list(await asyncio.gather(*(one(item) for item in items)))
        return ChunkResult(pairs, _counters(self.runner.stats), list(self.runner.context.notes), self.identity)

    def __del__(self) -> None:
        # A llama-server this actor started must not outlive it.
        if self._started is None:
            return
        try:
            asyncio.run(self.runner.close())
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass


def _counters(stats: CallStats) -> dict[str, int]:
    """Every counter of a CallStats as one flat mapping (stage events and per-model tokens too), so
    the driver can add up actors' running totals key by key."""
    flat = {
        "calls": stats.calls,
        "cache_hits": stats.cache_hits,
        "shared": stats.shared,
        "reasks": stats.reasks,
        "prompt_tokens": stats.usage.prompt_tokens,
        "completion_tokens": stats.usage.completion_tokens,
    }
    flat.update({f"event\t{name}": n for name, n in stats.events.items()})
    for book, by_model in (("spent", stats.spent_by_model), ("cached", stats.cached_by_model)):
        for model, usage in by_model.items():
            flat[f"{book}\t{model}\tprompt"] = usage.prompt_tokens
            flat[f"{book}\t{model}\tcompletion"] = usage.completion_tokens
    return flat


class RunCounters:
    """The run's call counters, summed over actors from each actor's latest running totals
    (results arrive in input order, not completion order, hence the maximum)."""

    def __init__(self, stats: CallStats):
        self.stats = stats
        self.base = _counters(stats)
        self.per_actor: dict[tuple[str, int], dict[str, int]] = {}

    def update(self, actor: tuple[str, int], totals: dict[str, int]) -> None:
        from ..model_io import Usage

        seen = self.per_actor.setdefault(actor, {})
        for key, value in totals.items():
            seen[key] = max(seen.get(key, 0), value)
        keys = set(self.base).union(*self.per_actor.values())
        total = {k: self.base.get(k, 0) + sum(a.get(k, 0) for a in self.per_actor.values()) for k in keys}
        s = self.stats
        s.calls, s.cache_hits, s.shared, s.reasks = total["calls"], total["cache_hits"], total["shared"], total["reasks"]
        s.usage = Usage(prompt_tokens=total["prompt_tokens"], completion_tokens=total["completion_tokens"])
        s.events = {k.split("\t", 1)[1]: v for k, v in total.items() if k.startswith("event\t")}
        books: dict[str, dict[str, Usage]] = {"spent": {}, "cached": {}}
        for key, value in total.items():
            parts = key.split("\t")
            if len(parts) == 3 and parts[0] in books:
                usage = books[parts[0]].setdefault(parts[1], Usage())
                setattr(usage, f"{parts[2]}_tokens", value)
        s.spent_by_model, s.cached_by_model = books["spent"], books["cached"]
