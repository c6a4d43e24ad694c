"""`--executor ray`: the local runner's run (resume, ordered writes, manifest, summary, error
budget, --strict) with the records processed by a Ray actor pool instead of in this process.

The driver reads and validates the input exactly as a local run does (`record_io`), skipping
finished records, and hands chunks of whole records to Ray Data as a dataset; `map_batches` runs
them on a fixed pool of `PipelineWorker` actors (one model replica each) and gives the results
back in input order, which the driver writes as they arrive. An actor that dies is replaced by
Ray and its chunk retried on another: the dead actor's results were never returned, so no record
is lost or written twice. Finished model calls live in the shared generation cache (SQLite on one
machine, Redis across machines), so a retried chunk only redoes calls that had not finished.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from itertools import islice
from typing import Any, Callable, Iterator

from ..cache import is_redis_url, public_location
from ..errors import MissingDependency, MmieError
from ..record_io import InputLine
from ..records import Record
from ..runner import ErrorBudget, Runner
from .worker import PipelineWorker, ReplicaLedger, RunCounters, encode_chunk

log = logging.getLogger(__name__)

POOL_START_TIMEOUT_S = 600  # a pool that cannot start in this time lacks resources: say so
CHUNKS_PER_ACTOR = 2  # chunks an actor works on at once (the next starts while one finishes)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependency("ray[data]", "ray", "--executor ray") from None
    return ray


class RayExecutor(Runner):
    def __init__(self, config, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.options = config.runtime.ray
        self._started_ray = False
        self._workers: dict[tuple[str, int], dict[str, Any]] = {}
        self.replicas = self.options.replicas or 1

    # -- the driver builds stages only to describe them; the actors start the backends ----------
    async def start(self) -> None:
        self.build_stages()
        ray = _ray()
        self.replicas = self.options.replicas or self._default_replicas()
        if not ray.is_initialized():
            if self.options.address:
                ray.init(address=self.options.address, logging_level=logging.WARNING)
            else:
                cpus = max(os.cpu_count() or 1, math.ceil(self.replicas * self.options.cpus_per_replica))
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
            self._started_ray = True
        self.replicas = self.options.replicas or self._default_replicas()  # GPUs are known now
        if self.options.address and self.config.runtime.cache and not is_redis_url(self.config.runtime.cache_path):
            self.context.note_once(
                "the generation cache is a SQLite file: actors on other machines each use their own; "
                "share one with --cache redis://host:port/db"
            )

    async def close(self) -> None:
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False

    def _default_replicas(self) -> int:
        urls = [len(spec.get("base_urls") or []) for spec in self.config.backends.values()]
        if self._gpus_per_replica() > 0:
            gpus = int(_ray().cluster_resources().get("GPU", 0)) if _ray().is_initialized() else 0
            urls.append(gpus)
        return max([1, *urls])

    def _gpus_per_replica(self) -> float:
        if self.options.gpus_per_replica is not None:
            return self.options.gpus_per_replica
        return 1.0 if any(spec.get("kind") == "vllm" for spec in self.config.backends.values()) else 0.0

    def executor_info(self) -> dict[str, Any]:
        return {
            "kind": "ray",
            "address": self.options.address or "local",
            "replicas": self.replicas,
            "cpus_per_replica": self.options.cpus_per_replica,
            "gpus_per_replica": self._gpus_per_replica(),
            "cache": public_location(self.config.runtime.cache_path) if self.config.runtime.cache else None,
            "workers": list(self._workers.values()),
        }

    # -- the records --------------------------------------------------------------------------
    async def process_stream(
        self,
        items: Iterator[InputLine],
        emit: Callable[[tuple[InputLine, Record | dict[str, Any]]], None],
        *,
        flush: Callable[[], None],
        budget: ErrorBudget,
    ) -> bool:
        ray = _ray()
        size = self.config.runtime.batch_size
        chunks = []
        while chunk := list(islice(items, size)):
            chunks.append({"chunk": encode_chunk(chunk)})
        if not chunks:
            return True
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results come back in input order
        context.enable_progress_bars = False
        # Start the whole pool before the first chunk: an actor ready early would otherwise queue
        # more than its share of chunks, and the run would end waiting on it.
        context.wait_for_min_actors_s = POOL_START_TIMEOUT_S
        ledger = ray.remote(num_cpus=0)(ReplicaLedger).remote()
        results = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
            PipelineWorker,
            fn_constructor_kwargs={
                "config": self.config.model_dump(mode="json"),
                "run_dir": str(self.context.run_dir),
                "input_dir": str(self.context.input_dir),
                "ledger": ledger,
                "replicas": self.replicas,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.replicas, max_concurrent_calls_per_actor=CHUNKS_PER_ACTOR),
            num_cpus=self.options.cpus_per_replica,
            num_gpus=self._gpus_per_replica(),
        )
        counters = RunCounters(self.stats)
        try:
            for row in results.iter_rows():
                result = pickle.loads(row["result"])
                actor = (result.worker["host"], result.worker["pid"])
                counters.update(actor, result.stats)
                for note in result.notes:
                    self.context.note_once(note)
                self._workers[actor] = result.worker
                for item, value in result.pairs:
                    if isinstance(value, Record):
                        budget.observe(value)
                    emit((item, value))
                flush()
                if budget.exhausted:
                    return False
        except ray.exceptions.RayError as exc:
            raise MmieError(f"the Ray run failed: {exc}") from exc
        return True
