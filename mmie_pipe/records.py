"""Typed records that flow through every pipeline.

A `Post` is what the user gives us (one JSONL line); a `Record` is a post plus everything the stages
add. Fields are explicit so that `mmie-pipe validate` can check which stage writes what a later
stage reads, and so that a bad value is rejected with a message naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Box(Strict):
    """An axis-aligned box in image pixels (Pascal-VOC convention: xmin, ymin, xmax, ymax)."""

    xmin: float = Field(ge=0)
    ymin: float = Field(ge=0)
    xmax: float = Field(ge=0)
    ymax: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Box":
        if self.xmax < self.xmin or self.ymax < self.ymin:
            raise ValueError(f"box corners out of order: ({self.xmin},{self.ymin},{self.xmax},{self.ymax})")
        return self

    @property
    def area(self) -> float:
        return (self.xmax - self.xmin) * (self.ymax - self.ymin)

    def iou(self, other: "Box") -> float:
        ix = max(0.0, min(self.xmax, other.xmax) - max(self.xmin, other.xmin))
        iy = max(0.0, min(self.ymax, other.ymax) - max(self.ymin, other.ymin))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


class Entity(Strict):
    """A typed mention. `start`/`end` are character offsets into the record's `text` ([start, end)).

    Offsets are left out only for a string that does not occur in the text (external predictions);
    such an entity can only match in string-mode evaluation.
    """

    text: str = Field(min_length=1)
    start: int | None = Field(default=None, ge=0)
    end: int | None = Field(default=None, gt=0)
    # None only for untyped arguments (MNRE heads/tails); NER stages always set it.
    type: str | None = None
    fine_type: str | None = None
    score: float | None = None
    # Distribution over types (MQA's choice, the tagger), read by GEM's entropy gate; `none_prob` is
    # MQA's none-of-the-above probability, before `type_probs` were renormalised without it.
    type_probs: dict[str, float] | None = None
    none_prob: float | None = Field(default=None, ge=0, le=1)
    # RiVEG: what the entity is, in a line (expansion), read by entailment and grounding.
    description: str | None = None
    # None = unknown; False = not in the image (GMNER "None" box); True = grounded.
    groundable: bool | None = None
    groundable_prob: float | None = Field(default=None, ge=0, le=1)
    boxes: list[Box] = Field(default_factory=list)
    box_score: float | None = None
    # field -> "stage.vN model", for the fields stages set on this entity.
    provenance: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _span(self) -> "Entity":
        if (self.start is None) != (self.end is None):
            raise ValueError("an entity has both start and end, or neither")
        if self.start is None:
            return self
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if self.end - self.start != len(self.text):
            raise ValueError(
                f"span [{self.start}, {self.end}) has length {self.end - self.start} "
                f"but text {self.text!r} has length {len(self.text)}"
            )
        return self

    @property
    def box(self) -> Box | None:
        return self.boxes[0] if self.boxes else None


class Relation(Strict):
    head: Entity
    tail: Entity
    label: str = Field(min_length=1)
    score: float | None = None
    # The distribution over relation labels the label was chosen from (MQA for MNRE).
    label_probs: dict[str, float] | None = None


class DetectedObject(Strict):
    label: str
    score: float = Field(ge=0, le=1)
    box: Box


class OcrLine(Strict):
    text: str
    score: float = Field(ge=0, le=1)
    box: Box


class Gold(Strict):
    """Reference annotations carried inside an input record (written by `mmie-pipe data convert`)."""

    entities: list[Entity] = Field(default_factory=list)
    relations: list[Relation] = Field(default_factory=list)


class Post(Strict):
    """One input line. Unknown keys are rejected so that typos surface instead of being ignored."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    tokens: list[str] | None = None
    image: str | None = None
    caption: str | None = None
    gold: Gold | None = None
    # Free-form provenance (dataset, split, image id...) that stages never interpret.
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Numeric ids are common in tweet dumps; accept them but keep ids as strings.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("text")
    @classmethod
    def _has_content(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is only whitespace")
        return value

    @model_validator(mode="after")
    def _gold_offsets(self) -> "Post":
        if self.gold:
            check_entities(self.text, self.gold.entities, "gold.entities")
        return self


def check_entities(text: str, entities: list[Entity] | None, where: str) -> None:
    """Offsets must index the entity's exact surface in the text; an entity without offsets is
    allowed only when its string is absent from the text (otherwise its offsets were lost)."""
    for i, ent in enumerate(entities or ()):
        if ent.start is None:
            if ent.text in text:
                raise ValueError(f"{where}[{i}]: {ent.text!r} occurs in the text but has no offsets")
        elif text[ent.start : ent.end] != ent.text:
            raise ValueError(f"{where}[{i}]: text[{ent.start}:{ent.end}] is {text[ent.start:ent.end]!r}, not {ent.text!r}")


class StageError(Strict):
    stage: str
    reason: str
    line: int | None = None
    kind: Literal["input", "stage", "model", "image"] = "stage"


# Fields a stage may write. `validate` checks reads against these plus the input fields.
ARTIFACT_FIELDS: tuple[str, ...] = (
    "caption",
    "objects",
    "ocr",
    "visual_context",
    "knowledge",
    "examples",
    "spans",
    "entities",
    "relations",
)
INPUT_FIELDS: tuple[str, ...] = ("id", "text", "tokens", "image", "caption", "gold", "meta")


class Record(Post):
    """A post plus what the stages produced, and where it came from in the input."""

    line: int | None = None
    objects: list[DetectedObject] | None = None
    ocr: list[OcrLine] | None = None
    visual_context: str | None = None
    knowledge: str | None = None
    # Ids of the few-shot examples chosen for this record (by whichever stage prompts with them).
    examples: list[str] | None = None
    # Candidate mentions proposed before typing (MQA's span step); `entities` are the typed result.
    spans: list[Entity] | None = None
    entities: list[Entity] | None = None
    relations: list[Relation] | None = None
    # Which stage produced each artifact and how (e.g. caption source), for the reader of outputs.
    provenance: dict[str, str] = Field(default_factory=dict)
    errors: list[StageError] = Field(default_factory=list)

    @model_validator(mode="after")
    def _predicted_offsets(self) -> "Record":
        check_entities(self.text, self.entities, "entities")
        check_entities(self.text, self.spans, "spans")
        for i, rel in enumerate(self.relations or ()):
            check_entities(self.text, [rel.head, rel.tail], f"relations[{i}].head/tail")
        return self

    @property
    def ok(self) -> bool:
        return not self.errors

    def has(self, field: str) -> bool:
        return getattr(self, field, None) is not None


def find_span(text: str, surface: str, taken: set[tuple[int, int]] | None = None) -> tuple[int, int] | None:
    """Character span of `surface` in `text`, preferring an occurrence not in `taken`.

    LLMs answer with surface strings; we map them back to offsets so metrics never join outputs to
    inputs by position. Exact match first, then case-insensitive.
    """
    taken = taken or set()
    for haystack, needle in ((text, surface), (text.lower(), surface.lower())):
        start = haystack.find(needle)
        first = None
        while start != -1 and needle:
            span = (start, start + len(needle))
            if first is None:
                first = span
            if span not in taken:
                return span
            start = haystack.find(needle, start + 1)
        if first is not None:
            return first
    return None
