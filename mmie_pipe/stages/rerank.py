"""`rerank` (GEM): re-type the entities a first stage is unsure about with a multiple-choice question.

For each entity whose type distribution (`type_probs`, written by MQA's `choice` stage or the
tagger) has normalised entropy above `gamma`, the top-K types become a lettered question to a
reranker model: a VLM sees the image, a text LLM the caption. The answer is the most probable
letter under the runtime's choice scoring; confident entities keep their type. In fine-grained
mode (FMNERG) the candidates are the fine types of the entity's coarse type. The run summary
counts entities seen, gated, reranked and changed (`rerank.*`).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from ..calls import fan_out
from ..errors import ModelCallError, StageInputError
from ..images import model_image
from ..model_io import ImagePart
from ..records import Entity, Record
from ..registry import stages
from ..reranking import TEMPLATE, Question, normalized_entropy, question_request, top_types
from .base import Role, Stage
from .vision import VisionParams

COUNTS = ("entities", "gated", "reranked", "changed", "failed", "no_distribution")


class RerankParams(VisionParams):
    gamma: float = Field(default=0.2, ge=0, le=1, description="rerank when H(p)/log(n) exceeds this")
    top_k: int = Field(default=5, ge=2, le=26)
    granularity: Literal["coarse", "fine"] = "coarse"  # fine: re-type `fine_type` within the coarse type
    hierarchy: str = "fmnerg"  # fine mode: shipped hierarchy name or a JSON file
    # What the reranker sees of the image: auto = the image when the backend takes images and the
    # record has one, else the caption (or visual context) as text.
    context: Literal["auto", "image", "caption", "none"] = "auto"
    template: str = TEMPLATE
    lora: str | None = None  # adapter name known to the backend (transformers / vllm / vLLM server)
    type_words: dict[str, str] = Field(default_factory=dict, description="readable names of types")
    # Entities without a usable distribution (e.g. from the LLM `extract` stage): keep their type,
    # or treat the distribution as uniform over `types` (always gated; the first top_k types).
    missing_distribution: Literal["keep", "uniform"] = "keep"
    types: list[str] = Field(default_factory=lambda: ["PER", "LOC", "ORG", "MISC"])


@stages.register("rerank")
class RerankStage(Stage):
    name = "rerank"
    version = 1
    Params = RerankParams
    reads = ("entities",)
    optional_reads = ("image", "caption", "visual_context")
    writes = ("entities",)
    roles = {"llm": Role(needs=frozenset({"choices"}), description="the reranker (a VLM or a text LLM)")}

    @classmethod
    def role_needs(cls, params: RerankParams) -> dict[str, frozenset[str]]:
        needs = {"choices"} | ({"images"} if params.context == "image" else set()) | ({"lora"} if params.lora else set())
        return {"llm": frozenset(needs)}

    def __init__(self, params: RerankParams, model, context):
        super().__init__(params, model, context)
        self.params: RerankParams = params
        self.hierarchy = None

    async def setup(self) -> None:
        from ..data.hierarchy import load_hierarchy
        from ..prompts import template_source

        template_source(self.params.template)  # a missing template fails before any record
        if self.params.granularity == "fine":
            self.hierarchy = load_hierarchy(self.params.hierarchy)
        if self.params.context == "image" and "images" not in self.model.backend.capabilities:
            raise StageInputError(f"rerank: context 'image' but backend {self.model.backend.kind!r} takes no images")
        for name in COUNTS:
            self._count(f"rerank.{name}", 0)

    def _count(self, event: str, n: int = 1) -> None:
        if self.context.stats is not None:  # the run's counters: summary and manifest
            self.context.stats.count(event, n)

    # -- which entities, which candidates ------------------------------------------------------
    def candidates(self, entity: Entity) -> list[str] | None:
        """The types to ask about, or None when the entity keeps its type."""
        p = self.params
        if p.granularity == "coarse":
            current, label_set = entity.type, list(p.types)
            probs = entity.type_probs or None
        else:
            coarse = entity.type if entity.type in self.hierarchy.children else self.hierarchy.parent(entity.fine_type or "")
            label_set = list(self.hierarchy.fine_of(coarse)) if coarse else list(self.hierarchy.fine_types)
            current = entity.fine_type
            # Only a distribution over fine types can rank fine candidates.
            probs = entity.type_probs if entity.type_probs and set(entity.type_probs) & set(self.hierarchy.fine_types) else None
        if probs is None:
            self._count("rerank.no_distribution")
            # An entity with no type at this granularity yet is always asked.
            if p.missing_distribution == "keep" and current is not None:
                return None
            options = label_set[: p.top_k]
        else:
            if normalized_entropy(probs) <= p.gamma:
                return None
            options = top_types(probs, p.top_k, allowed=label_set if p.granularity == "fine" else None)
            if p.granularity == "fine" and len(options) < 2:
                options = label_set[: p.top_k]
        return options if len(options) >= 2 else None

    async def _image(self, record: Record) -> ImagePart | None:
        p = self.params
        wants = p.context == "image" or (p.context == "auto" and "images" in self.model.backend.capabilities)
        if not wants or not record.image:
            if p.context == "image":
                raise StageInputError("rerank: context 'image' but the record has no image")
            return None
        scratch = self.context.run_dir / "images" if self.context.run_dir else None
        image = await asyncio.to_thread(model_image, record.image, p.image_options(self.context.input_dir), scratch)
        return image.part

    # -- per record ------------------------------------------------------------------------------
    async def process(self, record: Record) -> None:
        p = self.params
        entities = record.entities or []
        self._count("rerank.entities", len(entities))
        asked = [(e, options) for e in entities if (options := self.candidates(e)) is not None]
        if not asked:
            return
        self._count("rerank.gated", len(asked))
        image = await self._image(record)
        caption = None if image is not None or p.context == "none" else (record.caption or record.visual_context)
        questions = [Question(record.text, e.text, tuple(options), caption, image) for e, options in asked]
        outcomes = await fan_out([self._ask(q) for q in questions])
        field = "type" if p.granularity == "coarse" else "fine_type"
        source = f"{self.qualified_name} {self.model.backend.identity().get('name', '?')}" + (f" lora:{p.lora}" if p.lora else "")
        failures = []
        for (entity, _), outcome in zip(asked, outcomes):
            if not outcome.ok:
                failures.append(f"{entity.text!r}: {outcome.error}")
                continue
            new_type, prob = outcome.value
            if getattr(entity, field) != new_type:
                self._count("rerank.changed")
            setattr(entity, field, new_type)
            entity.score = prob
            entity.provenance[field] = source
            self._count("rerank.reranked")
        if failures:  # the answered entities keep their new types; the record says which failed
            self._count("rerank.failed", len(failures))
            raise ModelCallError(f"{len(failures)} of {len(asked)} rerank questions failed: " + "; ".join(failures)[:500])

    async def _ask(self, question: Question) -> tuple[str, float]:
        p = self.params
        request = question_request(question, template=p.template, words=p.type_words or None, lora=p.lora)
        response = await self.model.choose(request, question.letters)
        return question.type_of(response.text), response.choice.probs[response.text]
