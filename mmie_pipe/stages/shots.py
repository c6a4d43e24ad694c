"""Few-shot parameters and the per-stage example picker, shared by every stage that shows solved
examples (`extract`, `knowledge`, `spans`). Selection itself is `mmie_pipe.selection`."""

from __future__ import annotations

import asyncio
from typing import Callable

from pydantic import Field

from ..fewshot import Example, load_pool
from ..records import Record
from ..selection import Similarity, Strategy, build_selector, pool_examples, query_dict
from .base import StageParams


class FewShotParams(StageParams):
    shots: int = Field(default=5, ge=0, le=64)
    # Shipped pool name, a JSONL path (e.g. a converted train split), or pgim:2015 / pgim:2017.
    examples: str = "ner_tweets.v1"
    selection: Strategy = "similar"
    # How `similar` measures similarity: sentence embeddings when the transformers extra is
    # installed (auto), else TF-IDF; `mmr` needs embeddings.
    similarity: Similarity = "auto"


class ShotPicker:
    """Builds the stage's selector once (embedding the pool may take seconds) and picks a record's
    examples, recording their ids on the record."""

    def __init__(self, params: FewShotParams, seed: int, note: Callable[[str], None], owner: str):
        self.params = params
        self.seed = seed
        self.note = note
        self.owner = owner
        self._selector = None
        self._pool: tuple[Example, ...] = ()

    def _build(self) -> None:
        if self._selector is None:
            p = self.params
            self._pool = load_pool(p.examples)
            self._selector, how = build_selector(self._pool, p.selection, p.shots, seed=self.seed, similarity=p.similarity)
            self.note(f"{self.owner}: examples from {p.examples} ({how})")

    async def setup(self) -> None:
        if self.params.shots:
            await asyncio.to_thread(self._build)

    def pool(self) -> tuple[Example, ...]:
        self._build()
        return self._pool

    def _choose(self, record: Record) -> list[Example]:
        self._build()
        chosen = self._selector.select_examples(query_dict(record.id, record.text, record.caption))
        return pool_examples(self._pool, chosen, self.params.selection)

    def pick(self, record: Record) -> list[Example]:
        """The record's examples (none when `shots` is 0); their ids join `record.examples`."""
        if not self.params.shots:
            return []
        examples = self._choose(record)
        remember_examples(record, examples)
        return examples

    async def apick(self, record: Record) -> list[Example]:
        """`pick` with the selection off the event loop (embedding the query runs the encoder)."""
        if not self.params.shots:
            return []
        examples = await asyncio.to_thread(self._choose, record)
        remember_examples(record, examples)
        return examples


def remember_examples(record: Record, examples: list[Example]) -> None:
    """Several stages may show examples (knowledge, then extract); the record lists each id once."""
    ids = list(record.examples or [])
    ids += [ex.id for ex in examples if ex.id not in ids]
    record.examples = ids
