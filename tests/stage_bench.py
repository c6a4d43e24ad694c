"""Stages bound to backends the way the runner binds them, for tests that drive stages directly
(shared by the RiVEG and OFA tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import CallStats, ModelClient
from mmie_pipe.records import Record
from mmie_pipe.stages.base import StageContext


class Bench:
    """Stages sharing one cache and one set of counters."""

    def __init__(self, tmp_path: Path):
        self.cache = GenerationCache(tmp_path / "cache.sqlite")
        self.stats = CallStats()
        self.context = StageContext(run_dir=tmp_path, cache=self.cache, stats=self.stats)

    def stage(self, cls, params: dict, backend):
        client = ModelClient(backend, self.cache, stage=cls.name, stage_version=cls.version, stats=self.stats)
        return cls(cls.Params.model_validate(params), client, self.context)

    def process(self, record: Record, *stages) -> Record:
        async def go():
            for stage in stages:
                await stage.setup()
                await stage.process(record)
            return record

        return asyncio.run(go())
