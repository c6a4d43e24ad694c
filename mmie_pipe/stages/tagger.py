"""The trained transformer + CRF tagger as a pipeline stage (see docs/tagger.md).

PGIM and RiVEG tag the post with such a model, given auxiliary context (LLM knowledge, a
caption); GEM reads its per-entity type distributions. Records are batched across the runner's
in-flight records by a micro-batcher; the model loads once per run in `setup`.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from ..records import Record
from ..registry import stages
from .base import Stage, StageParams

ContextField = Literal["knowledge", "visual_context", "caption"]


class TaggerParams(StageParams):
    model: str = Field(description="directory of a trained tagger (`mmie-pipe train tagger` writes <output>/best)")
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:1 ...
    batch_size: int = Field(default=32, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)  # how long a partial batch waits for more records
    # Context fields to append after the post; None: those the model was trained with.
    context: list[ContextField] | None = None
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads


@stages.register("tagger")
class TaggerStage(Stage):
    name = "tagger"
    version = 1
    Params = TaggerParams
    reads = ("text",)
    optional_reads = ("tokens", "knowledge", "visual_context", "caption")
    writes = ("entities",)
    # No role: a local torch model, not a generation backend.

    async def setup(self) -> None:
        from ..train.checkpoint import load_tagger
        from ..batching import MicroBatcher
        from ..train.predictor import Predictor, pick_device

        p: TaggerParams = self.params
        if p.threads:
            import torch

            torch.set_num_threads(p.threads)
        device = pick_device(p.device)
        tagger = await asyncio.to_thread(load_tagger, p.model, device=device)
        self.predictor = Predictor(tagger, batch_size=p.batch_size, context_fields=p.context)
        self.batcher = MicroBatcher(self.predictor.predict_encoded, max_batch=p.batch_size, max_wait_s=p.max_wait_ms / 1000)
        trained = tagger.config.context_fields
        self.context.note_once(
            f"tagger {p.model}: {'+'.join(tagger.config.types)} ({tagger.config.scheme}), encoder {tagger.config.encoder}, "
            f"context {'+'.join(self.predictor.context_fields) or 'none'} (trained with {'+'.join(trained) or 'none'}), on {device}"
        )

    async def teardown(self) -> None:
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            await batcher.close()

    async def process(self, record: Record) -> None:
        request = self.predictor.request(record)
        missing = [f for f in self.predictor.context_fields if not getattr(record, f, None)]
        if missing:
            self.context.note_once(f"tagger: some records lack {', '.join(missing)}; they are tagged without it")
        if not request.tokens.words:  # a blank post has no entities
            record.entities = []
        else:
            record.entities = await self.batcher.submit((request, self.predictor.encode(request)))
        record.provenance["entities"] = f"{self.qualified_name}:{self.params.model}"
