"""`extract`: LLM entity extraction, by a few-shot completion prompt or a JSON-schema chat prompt.

Tiny local models only follow demonstrations (measured: a zero-shot JSON-schema chat prompt gave
SmolLM2-135M F1 0.00 on Twitter-2017), so the default is an instruction plus solved examples in a
plain "Tweet: ... / Entities: X (PER); Y (ORG)" completion format. Larger chat models can use
`mode: chat_json`, where the answer is constrained by a JSON schema and re-asked when invalid.
Answers are surface strings; they are mapped back to character offsets in the post.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ..calls import json_parser
from ..fewshot import Example
from ..model_io import Constraint, Message, ModelRequest, Sampling
from ..prompts import check_template, render
from ..records import Entity, Record, find_span
from ..registry import stages
from .base import Role, Stage
from .shots import FewShotParams, ShotPicker

DEFAULT_LABELS = {
    "PER": "a person, including user names of people",
    "LOC": "a location: city, country, venue, landmark",
    "ORG": "an organization: company, team, band, institution",
    "MISC": "another named thing: event, product, work of art, nationality",
}
# Spellings models use for the usual types; mapped onto whatever label set the pipeline uses.
TYPE_SYNONYMS = {
    "PERSON": "PER", "PEOPLE": "PER", "LOCATION": "LOC", "PLACE": "LOC", "GPE": "LOC",
    "ORGANIZATION": "ORG", "ORGANISATION": "ORG", "COMPANY": "ORG", "OTHER": "MISC", "MISCELLANEOUS": "MISC",
}
CONTEXT_FIELDS = ("caption", "visual_context", "knowledge")


class ExtractParams(FewShotParams):
    mode: Literal["fewshot", "chat_json"] = "fewshot"
    labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LABELS), min_length=1)
    shots: int = Field(default=8, ge=0, le=64)
    # Record fields shown to the model as context when present (caption, visual_context, knowledge).
    context: list[Literal["caption", "visual_context", "knowledge"]] = Field(default_factory=list)
    context_chars: int = Field(default=400, ge=0)
    template: str | None = None  # default: extract.<mode>.v1.jinja
    max_tokens: int = Field(default=64, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    max_reasks: int = Field(default=1, ge=0)

    @field_validator("template")
    @classmethod
    def _template_exists(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)


class _EntityAnswer(BaseModel):
    text: str
    type: str


class _ExtractionAnswer(BaseModel):
    entities: list[_EntityAnswer]


_ITEM = re.compile(r"^(?P<surface>.+?)\s*\(\s*(?P<type>[A-Za-z_\-]+)\s*\)\s*$")


def parse_fewshot_answer(text: str) -> list[tuple[str, str]]:
    """`X (PER); Y (ORG)` -> [(X, PER), (Y, ORG)]; `none` -> []. Unparseable items are dropped:
    a small model's partial answer is still worth its well-formed part."""
    answer = text.strip().splitlines()[0] if text.strip() else ""
    if answer.lower().strip(" .") in {"", "none", "no entities", "n/a"}:
        return []
    items = []
    for piece in answer.split(";"):
        match = _ITEM.match(piece.strip())
        if match:
            items.append((match["surface"].strip().strip("\"'"), match["type"]))
    return items


def format_fewshot_answer(entities: tuple[tuple[str, str], ...]) -> str:
    return "; ".join(f"{surface} ({etype})" for surface, etype in entities) or "none"


def normalise_type(raw: str, labels: dict[str, str]) -> str | None:
    upper = raw.strip().upper()
    if upper in labels:
        return upper
    mapped = TYPE_SYNONYMS.get(upper, upper)
    if mapped in labels:
        return mapped
    if mapped == "MISC" and "OTHER" in labels:  # Twitter-2015/GMNER call it OTHER
        return "OTHER"
    return None


def entities_from_answer(text: str, pairs: list[tuple[str, str]], labels: dict[str, str]) -> list[Entity]:
    """Map (surface, type) answers onto the post; unknown types and strings not in the post are dropped."""
    taken: set[tuple[int, int]] = set()
    out = []
    for surface, raw_type in pairs:
        etype = normalise_type(raw_type, labels)
        span = find_span(text, surface, taken) if surface else None
        if etype is None or span is None or span in taken:
            continue
        taken.add(span)
        out.append(Entity(text=text[span[0] : span[1]], start=span[0], end=span[1], type=etype))
    return sorted(out, key=lambda e: e.start)


def _example_answer(example: Example, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """An example's entities in the pipeline's label set (pools written for MISC serve OTHER too)."""
    out = []
    for surface, etype in example.entities:
        mapped = normalise_type(etype, labels)
        if mapped is not None:
            out.append((surface, mapped))
    return tuple(out)


@stages.register("extract", version=1)
class ExtractEntities(Stage):
    name = "extract"
    version = 1
    Params = ExtractParams
    reads = ("text",)
    optional_reads = CONTEXT_FIELDS
    writes = ("entities", "examples")
    roles = {"llm": Role(description="the extracting LLM")}

    @classmethod
    def role_needs(cls, params: ExtractParams) -> dict[str, frozenset[str]]:
        return {"llm": frozenset({"completion"} if params.mode == "fewshot" else {"chat", "json_schema"})}

    def __init__(self, params: ExtractParams, model, context):
        super().__init__(params, model, context)
        self.params: ExtractParams = params
        self.template = params.template or f"extract.{params.mode}.v1.jinja"
        self.shots = ShotPicker(params, context.seed, context.note_once, self.qualified_name)

    async def setup(self) -> None:
        await self.shots.setup()

    def _context_text(self, record: Record) -> str:
        parts = [str(getattr(record, f)) for f in self.params.context if getattr(record, f, None)]
        return " ".join(parts)[: self.params.context_chars]

    def _example_context(self, example: Example) -> str:
        """The same context fields for a solved example, where the pool has them (captions, and
        written knowledge in PGIM-style pools)."""
        fields = {"caption": example.caption, "knowledge": example.answer}
        parts = [fields[f] for f in self.params.context if fields.get(f)]
        return " ".join(parts)[: self.params.context_chars]

    def build_request(self, record: Record, examples: list[Example] | None = None) -> ModelRequest:
        p = self.params
        examples = self.shots.pick(record) if examples is None else examples
        context = self._context_text(record)
        sampling = Sampling(temperature=p.temperature, max_tokens=p.max_tokens, stop=("\n",) if p.mode == "fewshot" else ())
        if p.mode == "fewshot":
            prompt = render(
                self.template,
                instruction="Find the named entities in each tweet. Types: "
                + ", ".join(f"{k} ({v.split(':')[0].split(',')[0]})" for k, v in p.labels.items())
                + ". Write none when there is no entity.",
                examples=[
                    {"text": ex.text, "answer": format_fewshot_answer(_example_answer(ex, p.labels)),
                     "context": self._example_context(ex)}
                    for ex in examples
                ],
                text=record.text,
                context=context,
            )
            return ModelRequest(prompt=prompt, sampling=sampling)
        schema = _ExtractionAnswer.model_json_schema()
        schema["properties"]["entities"]["items"] = {
            "type": "object",
            "properties": {"text": {"type": "string"}, "type": {"type": "string", "enum": list(p.labels)}},
            "required": ["text", "type"],
        }
        schema.pop("$defs", None)
        content = render(
            self.template,
            labels=p.labels,
            examples=[
                {"text": ex.text, "json": json.dumps({"entities": [{"text": s, "type": t} for s, t in _example_answer(ex, p.labels)]})}
                for ex in examples
            ],
            text=record.text,
            context=context,
        )
        return ModelRequest(
            messages=(Message(role="user", content=content),),
            sampling=sampling,
            constraint=Constraint(json_schema=schema, schema_name="entities"),
        )

    async def process(self, record: Record) -> None:
        request = self.build_request(record, await self.shots.apick(record))
        if self.params.mode == "fewshot":
            response = await self.model.generate(request)
            pairs = parse_fewshot_answer(response.text)
        else:
            answer = await self.model.ask(request, json_parser(_ExtractionAnswer), max_reasks=self.params.max_reasks)
            pairs = [(e.text, e.type) for e in answer.value.entities]
        record.entities = entities_from_answer(record.text, pairs, self.params.labels)
