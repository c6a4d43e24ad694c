"""RiVEG: entity expansion (`expand`), visual entailment (`entail`) and visual grounding (`ground`).

After NER, an LLM describes each entity in one line ("a football league in England"); entailment
decides whether the entity is pictured (GMNER's groundable / "None" box); grounding finds its box
in image pixels. Entailment and grounding run on the backend the stage is bound to, by `method`:

- `caption` (entail): a text-only LLM reads the caption or visual context and the description.
- `vlm`: a vision chat model; yes/no with probabilities and a threshold; the box as JSON in a
  configurable coordinate convention (`mmie_pipe.vision.coords`), converted and clipped.
- `ofa`: OFA fine-tuned for SNLI-VE / RefCOCO through ModelScope (`mmie_pipe.adapters.ofa`).
- `open_vocab`: a zero-shot detector (OWLv2, Grounding DINO) queried with the descriptions.
- `detector`: the COCO detector: an entity is pictured when a detected class fits its type or
  description (a person for PER); its box is the best such detection. Crude: see docs/riveg.md.

`auto` picks the method from the bound backend. Results live on each entity (`description`,
`groundable`, `groundable_prob`, `boxes`, `box_score`, `provenance`). A record without an image
makes every entity ungroundable for image methods.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from ..adapters.detectors import Detector
from ..adapters.tools import LocalTool
from ..calls import fan_out, json_parser
from ..errors import ConfigError
from ..images import model_image
from ..model_io import Constraint, Message, ModelRequest, Sampling, TextPart
from ..prompts import render
from ..records import Box, DetectedObject, Entity, Record
from ..registry import stages
from ..tool_calls import ToolClient
from ..vision.coco import COCO_LABELS
from ..vision.coords import Convention, to_pixels
from .base import Role, Stage, StageParams
from .vision import VisionParams
from .riveg_items import (
    QueryStyle, load_examples, mark, one_line, query_text, record_item_error, visual_text, yes_probability,
)

VISUAL_FIELDS = ("caption", "visual_context")
# COCO classes that can picture an entity of each type; a class named in the entity's description
# also fits ("a pet dog" -> dog). Types without classes are grounded only through descriptions.
DEFAULT_TYPE_CLASSES: dict[str, list[str]] = {"PER": ["person"], "LOC": [], "ORG": [], "OTHER": [], "MISC": []}
# Detector results are shared by `entail` and `ground`: one detection per image and tool.
DETECT_STAGE, DETECT_VERSION = "riveg.detect", 1
EntailMethod = Literal["auto", "caption", "vlm", "ofa", "open_vocab", "detector"]
GroundMethod = Literal["auto", "vlm", "ofa", "open_vocab", "detector"]


def _source(stage: Stage, backend: Any) -> str:
    name = backend.identity().get("name") if hasattr(backend, "identity") else None
    return f"{stage.qualified_name} {name or backend.kind}"


# -- expand -----------------------------------------------------------------------------------------


class ExpandParams(StageParams):
    examples: str = "riveg_expand.v1"  # shipped pool or JSONL path: text, context, entity, type, description
    shots: int = Field(default=4, ge=0, le=32)
    template: str = "expand.fewshot.v1.jinja"
    context: list[Literal["caption", "visual_context"]] = Field(default_factory=lambda: list(VISUAL_FIELDS))
    context_chars: int = Field(default=300, ge=0)
    max_tokens: int = Field(default=32, gt=0)
    temperature: float = Field(default=0.0, ge=0)


@stages.register("expand", version=1)
class ExpandEntities(Stage):
    """One line per entity saying what it is, from the post, the image text and the entity's type."""

    name = "expand"
    version = 1
    Params = ExpandParams
    reads = ("entities",)
    optional_reads = VISUAL_FIELDS
    writes = ("entities",)
    roles = {"llm": Role(needs=frozenset({"completion"}))}
    INSTRUCTION = "Say in a few words what each entity mentioned in a tweet is."

    def __init__(self, params: ExpandParams, model, context):
        super().__init__(params, model, context)
        self.params: ExpandParams = params
        self.examples = load_examples(params.examples, ("text", "entity", "type", "description"))[: params.shots]

    def build_request(self, record: Record, entity: Entity) -> ModelRequest:
        p = self.params
        prompt = render(
            p.template,
            instruction=self.INSTRUCTION,
            examples=[{**ex, "context": (ex.get("context") or "")[: p.context_chars] if p.context else ""} for ex in self.examples],
            text=record.text,
            context=visual_text(record, p.context, p.context_chars) or "",
            entity=entity.text,
            type=entity.type or "entity",
        )
        return ModelRequest(prompt=prompt, sampling=Sampling(max_tokens=p.max_tokens, temperature=p.temperature, stop=("\n",)))

    async def describe_entity(self, record: Record, entity: Entity) -> str:
        response = await self.model.generate(self.build_request(record, entity))
        text = one_line(response.text)
        if not text:
            raise ValueError("the model returned an empty description")
        return text

    async def process(self, record: Record) -> None:
        if not record.entities:
            return
        outcomes = await fan_out([self.describe_entity(record, e) for e in record.entities])
        source = _source(self, self.model.backend)
        for entity, outcome in zip(record.entities, outcomes):
            if outcome.ok:
                entity.description = outcome.value
                mark(entity, source, "description")
            else:
                record_item_error(record, self.qualified_name, entity, outcome)


# -- shared by entail and ground --------------------------------------------------------------------


class _VisualParams(VisionParams):
    query: QueryStyle = "both"  # what the image is searched for: description, name, or both
    # detector / open_vocab: a detection must score at least this to picture an entity.
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    type_classes: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_TYPE_CLASSES.items()})


class _VisualStage(Stage):
    """Resolves the method from the bound backend and reaches tools through the cache path."""

    reads = ("entities",)
    optional_reads = ("image", *VISUAL_FIELDS)
    writes = ("entities",)
    # One model or tool per stage; what it must be able to do depends on `method`.
    roles = {"model": Role(description="entailment / grounding backend (a model, a detector or OFA)")}
    methods: ClassVar[tuple[str, ...]]
    METHOD_NEEDS: ClassVar[dict[str, frozenset[str]]]

    @classmethod
    def role_needs(cls, params) -> dict[str, frozenset[str]]:
        return {"model": cls.METHOD_NEEDS.get(params.method, frozenset())}

    def __init__(self, params, model, context):
        super().__init__(params, model, context)
        self.method = ""
        self.tools: ToolClient | None = None

    @property
    def backend(self) -> Any:
        return self.model.backend

    def resolve_method(self) -> str:
        backend, wanted = self.backend, self.params.method
        if isinstance(backend, Detector):
            found = "open_vocab" if backend.open_vocabulary else "detector"
        elif isinstance(backend, LocalTool) and backend.kind == "ofa":
            found = "ofa"
        elif isinstance(backend, LocalTool):
            raise ConfigError(f"{self.qualified_name}: backend {backend.kind!r} cannot {self.name}")
        else:
            found = "vlm" if "images" in backend.capabilities or "caption" not in self.methods else "caption"
            if wanted in ("vlm", "caption"):
                found = wanted
        if wanted != "auto" and wanted != found:
            raise ConfigError(f"{self.qualified_name}: method {wanted!r} does not fit backend {backend.kind!r} (it serves {found!r})")
        if found not in self.methods:
            raise ConfigError(f"{self.qualified_name}: method {found!r} is not available here (choose {', '.join(self.methods)})")
        if found == "vlm" and "images" not in backend.capabilities:
            raise ConfigError(f"{self.qualified_name}: method 'vlm' needs a backend that takes images")
        return found

    async def setup(self) -> None:
        self.method = self.resolve_method()
        if isinstance(self.backend, LocalTool):
            if not self.backend.capabilities & {"detect", "entail", "ground"}:
                raise ConfigError(f"{self.qualified_name}: backend {self.backend.kind!r} cannot {self.name}")
            shared = self.method in ("detector", "open_vocab")
            self.tools = ToolClient(
                self.backend, self.context.cache, stats=self.context.stats,
                stage=DETECT_STAGE if shared else self.name, stage_version=DETECT_VERSION if shared else self.version,
            )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.method or self.params.method}

    # -- detectors ------------------------------------------------------------------------------
    async def detections(self, record: Record, entities: list[Entity]) -> list[DetectedObject]:
        """All detections in the image (closed-label detector), or for the entities' queries."""
        tool: Detector = self.backend
        queries = sorted({query_text(e, self.params.query) for e in entities}) if tool.open_vocabulary else None
        value = await self.tools.run(
            record.image, self.params.image_options(self.context.input_dir), {"queries": queries},
            lambda image: {"items": [d.model_dump(mode="json") for d in tool.detect(image, queries)]},
        )
        return [DetectedObject.model_validate(item) for item in value["items"]]

    def fitting(self, entity: Entity, found: list[DetectedObject]) -> list[DetectedObject]:
        """Detections that may picture the entity, best first."""
        if self.method == "open_vocab":
            wanted = query_text(entity, self.params.query)
            fits = [d for d in found if d.label == wanted]
        else:
            classes = set(self.params.type_classes.get(entity.type or "", []))
            words = set(re.findall(r"[a-z]+", (entity.description or "").lower()))
            classes |= {label for label in COCO_LABELS.values() if set(label.split()) <= words}
            fits = [d for d in found if d.label in classes]
        return sorted((d for d in fits if d.score >= self.params.score_threshold), key=lambda d: -d.score)

    def assign_boxes(self, entities: list[Entity], found: list[DetectedObject]) -> list[DetectedObject | None]:
        """Best fitting detection per entity; entities in order of mention take distinct boxes while
        there are any left (two PER mentions and two people: one each), then share the best."""
        used: set[int] = set()
        out: list[DetectedObject | None] = []
        for entity in entities:
            fits = self.fitting(entity, found)
            fresh = [d for d in fits if id(d) not in used]
            pick = (fresh or fits or [None])[0]
            if pick is not None:
                used.add(id(pick))
            out.append(pick)
        return out


# -- entail -----------------------------------------------------------------------------------------


class EntailParams(_VisualParams):
    method: EntailMethod = "auto"
    threshold: float = Field(default=0.5, ge=0, le=1)  # P(pictured) at or above this: groundable
    # caption method: which text view of the image to read, its examples and prompt.
    context: list[Literal["caption", "visual_context"]] = Field(default_factory=lambda: list(VISUAL_FIELDS))
    context_chars: int = Field(default=400, ge=0)
    examples: str = "riveg_entail.v1"
    shots: int = Field(default=6, ge=0, le=32)
    template: str | None = None  # default: entail.<caption|vlm>.v1.jinja


@stages.register("entail", version=1)
class EntailEntities(_VisualStage):
    """Is each entity pictured? Writes `groundable` and `groundable_prob`."""

    name = "entail"
    version = 1
    Params = EntailParams
    methods = ("caption", "vlm", "ofa", "open_vocab", "detector")
    METHOD_NEEDS = {
        "caption": frozenset({"completion", "choice_probs"}), "vlm": frozenset({"chat", "images", "choice_probs"}),
        "ofa": frozenset({"entail"}), "open_vocab": frozenset({"detect"}), "detector": frozenset({"detect"}),
    }
    INSTRUCTION = "Say whether each entity can be seen in the picture described."

    def __init__(self, params: EntailParams, model, context):
        super().__init__(params, model, context)
        self.params: EntailParams = params
        self.examples: list[dict[str, Any]] = []

    async def setup(self) -> None:
        await super().setup()
        if self.method == "caption" and self.params.shots:
            self.examples = load_examples(self.params.examples, ("context", "entity", "type", "answer"))[: self.params.shots]

    def caption_request(self, record: Record, entity: Entity, context: str) -> ModelRequest:
        p = self.params
        prompt = render(
            p.template or "entail.caption.v1.jinja", instruction=self.INSTRUCTION, examples=self.examples,
            context=context, entity=entity.text, type=entity.type or "entity", description=entity.description or "",
        )
        return ModelRequest(prompt=prompt, sampling=Sampling(max_tokens=1))

    async def vlm_request(self, record: Record, entity: Entity) -> ModelRequest:
        scratch = self.context.run_dir / "images" if self.context.run_dir else None
        image = await asyncio.to_thread(model_image, record.image, self.params.image_options(self.context.input_dir), scratch)
        text = render(self.params.template or "entail.vlm.v1.jinja", text=record.text, query=query_text(entity, self.params.query))
        return ModelRequest(messages=(Message(role="user", content=(image.part, TextPart(text=text))),), sampling=Sampling(max_tokens=1))

    async def ask_yes(self, request: ModelRequest) -> float:
        return await yes_probability(self.model, request)

    async def ofa_yes(self, record: Record, entity: Entity) -> float:
        hypothesis = query_text(entity, self.params.query)
        premise = record.text
        value = await self.tools.run(
            record.image, self.params.image_options(self.context.input_dir), {"hypothesis": hypothesis, "premise": premise},
            lambda image: self.backend.entail(image, hypothesis, premise),
        )
        return float(value["yes_prob"])

    def decide(self, entity: Entity, prob: float, source: str) -> None:
        entity.groundable_prob = round(min(max(prob, 0.0), 1.0), 6)
        entity.groundable = prob >= self.params.threshold
        mark(entity, source, "groundable", "groundable_prob")

    async def process(self, record: Record) -> None:
        entities = record.entities or []
        if not entities:
            return
        source = _source(self, self.backend)
        if self.method == "caption":
            context = visual_text(record, self.params.context, self.params.context_chars)
            if context is None:  # nothing says what the image shows: no entity can be placed in it
                for entity in entities:
                    self.decide(entity, 0.0, f"{self.qualified_name} no caption or visual context")
                return
            jobs = [self.ask_yes(self.caption_request(record, e, context)) for e in entities]
        elif not record.image:
            for entity in entities:
                self.decide(entity, 0.0, f"{self.qualified_name} no image")
            return
        elif self.method in ("detector", "open_vocab"):
            found = await self.detections(record, entities)
            for entity, pick in zip(entities, self.assign_boxes(entities, found)):
                best = max((d.score for d in self.fitting(entity, found)), default=0.0)
                self.decide(entity, best if pick else 0.0, source)
            return
        elif self.method == "vlm":
            jobs = [self._vlm_yes(record, e) for e in entities]
        else:
            jobs = [self.ofa_yes(record, e) for e in entities]
        outcomes = await fan_out(jobs)
        for entity, outcome in zip(entities, outcomes):
            if outcome.ok:
                self.decide(entity, outcome.value, source)
            else:
                record_item_error(record, self.qualified_name, entity, outcome)

    async def _vlm_yes(self, record: Record, entity: Entity) -> float:
        return await self.ask_yes(await self.vlm_request(record, entity))


# -- ground -----------------------------------------------------------------------------------------


class _BoxAnswer(BaseModel):
    bbox_2d: list[float] = Field(min_length=4, max_length=4)


BOX_SCHEMA = {
    "type": "object",
    "properties": {"bbox_2d": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}},
    "required": ["bbox_2d"],
}
COORDINATE_HINTS = {
    "pixels": " in pixels of the {width}x{height} image",
    "0-1": " as fractions of the image width and height, from 0 to 1",
    "0-1000": " on a 0 to 1000 scale of the image width and height",
    "qwen2.5-vl": "",  # the model's native absolute coordinates
}


class GroundParams(_VisualParams):
    method: GroundMethod = "auto"
    # Which entities to ground: those entailment called groundable (or left undecided), or all.
    only_groundable: bool = True
    # vlm: how the model writes boxes; Qwen2.5-VL: its processor's pixel bounds.
    coordinates: Convention = "pixels"
    min_pixels: int = Field(default=56 * 56, gt=0)
    max_pixels: int = Field(default=28 * 28 * 16384, gt=0)
    template: str = "ground.vlm.v1.jinja"
    max_tokens: int = Field(default=48, gt=0)
    max_reasks: int = Field(default=1, ge=0)


@stages.register("ground", version=1)
class GroundEntities(_VisualStage):
    """Each pictured entity's box in image pixels (`boxes[0]`) and its score (`box_score`)."""

    name = "ground"
    version = 1
    Params = GroundParams
    methods = ("vlm", "ofa", "open_vocab", "detector")
    METHOD_NEEDS = {"vlm": frozenset({"chat", "images"}), "ofa": frozenset({"ground"}),
                    "open_vocab": frozenset({"detect"}), "detector": frozenset({"detect"})}

    def __init__(self, params: GroundParams, model, context):
        super().__init__(params, model, context)
        self.params: GroundParams = params

    async def vlm_box(self, record: Record, entity: Entity) -> tuple[Box | None, float | None]:
        p = self.params
        scratch = self.context.run_dir / "images" if self.context.run_dir else None
        image = await asyncio.to_thread(model_image, record.image, p.image_options(self.context.input_dir), scratch)
        hint = COORDINATE_HINTS[p.coordinates].format(width=image.width, height=image.height)
        text = render(p.template, text=record.text, query=query_text(entity, p.query), coordinates=hint)
        request = ModelRequest(
            messages=(Message(role="user", content=(image.part, TextPart(text=text))),),
            sampling=Sampling(max_tokens=p.max_tokens),
            constraint=Constraint(json_schema=BOX_SCHEMA, schema_name="box") if "json_schema" in self.backend.capabilities else None,
        )
        answer = await self.model.ask(request, json_parser(_BoxAnswer), max_reasks=p.max_reasks)
        box = to_pixels(answer.value.bbox_2d, p.coordinates, image.width, image.height,
                        min_pixels=p.min_pixels, max_pixels=p.max_pixels)
        return box, None

    async def ofa_box(self, record: Record, entity: Entity) -> tuple[Box | None, float | None]:
        query = query_text(entity, self.params.query)
        value = await self.tools.run(
            record.image, self.params.image_options(self.context.input_dir), {"query": query}, lambda image: self.backend.ground(image, query)
        )
        coords = value.get("box")
        box = Box(xmin=coords[0], ymin=coords[1], xmax=coords[2], ymax=coords[3]) if coords else None
        return box, value.get("score")

    def place(self, entity: Entity, box: Box | None, score: float | None, source: str) -> None:
        if box is None:  # nothing found: the entity is reported ungroundable
            entity.boxes, entity.box_score, entity.groundable = [], None, False
            mark(entity, source, "boxes", "groundable")
            return
        entity.boxes, entity.box_score, entity.groundable = [box], score, True
        mark(entity, source, "boxes", "box_score", "groundable")

    async def process(self, record: Record) -> None:
        wanted = [e for e in record.entities or [] if not self.params.only_groundable or e.groundable is not False]
        if not wanted:
            return
        source = _source(self, self.backend)
        if not record.image:
            for entity in wanted:
                self.place(entity, None, None, f"{self.qualified_name} no image")
            return
        if self.method in ("detector", "open_vocab"):
            found = await self.detections(record, wanted)
            for entity, pick in zip(wanted, self.assign_boxes(wanted, found)):
                self.place(entity, pick.box if pick else None, pick.score if pick else None, source)
            return
        boxes = self.vlm_box if self.method == "vlm" else self.ofa_box
        outcomes = await fan_out([boxes(record, e) for e in wanted])
        for entity, outcome in zip(wanted, outcomes):
            if outcome.ok:
                self.place(entity, *outcome.value, source)
            else:
                record_item_error(record, self.qualified_name, entity, outcome)
