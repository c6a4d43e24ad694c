"""MQA for entities: `spans` proposes mentions, `choice` types each one with a multiple-choice
question (MQA: span extraction, then one multiple-choice question per span).

`spans` asks, per entity type (or once for all types), for a comma-separated list of mentions;
the proposed type is discarded. Mentions are mapped onto the text: every occurrence is kept
(exact match first, else case-insensitive, as `find_span` does), an occurrence that cuts a word is
not a mention, a leading `#` / `@` is left out (the data sets' convention), and spans inside a
longer proposed span are dropped.

`choice` asks, per span, "<span> is a person entity / ... / none of the above" and reads the
answer and the distribution over all options from one call. Every question of a record shares its
prompt prefix (instructions, examples, post, image) and ends with the span, so servers that cache
prompt prefixes (llama.cpp slots, vLLM prefix caching) reuse it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from ..calls import fan_out
from ..fewshot import Example
from ..model_io import Message, ModelRequest, Sampling
from ..prompts import render
from ..records import Entity, Record, find_span
from ..registry import stages
from .base import FanOutParams, Role, Stage
from .context import clip, image_words
from .extract import normalise_type
from .multiple_choice import (
    FALLBACK_COUNTER,
    MultipleChoiceParams,
    Options,
    choice_needs,
    choice_request,
    lay_out,
    read_outcome,
    report_failed,
    without_none,
)
from .shots import FewShotParams, ShotPicker

DEFAULT_TYPES = {"PER": "person", "LOC": "location", "ORG": "organization", "MISC": "miscellaneous"}
ContextField = Literal["visual_context", "caption"]

_EDGE = " \t\"'`“”‘’«»()[]{}<>*"
_TRAILING = ".,;:!?…"
_NO_ANSWER = {"", "none", "no", "n/a", "na", "nothing", "no entities", "none found", "null"}
_TYPE_SUFFIX = re.compile(r"\s*\([A-Za-z /_-]{1,20}\)$")  # "Messi (person)": a copied format


# -- span proposal: parsing and mapping onto the text ------------------------------------------


def parse_mentions(answer: str) -> list[str]:
    """`"Taylor Swift, Nashville"` -> ["Taylor Swift", "Nashville"]; `none` -> []. First line only."""
    line = answer.strip().splitlines()[0] if answer.strip() else ""
    mentions = []
    for piece in re.split(r"[,;]", line):
        piece = _TYPE_SUFFIX.sub("", piece.strip()).strip(_EDGE)
        if piece.lower().rstrip(_TRAILING) not in _NO_ANSWER and piece not in mentions:
            mentions.append(piece)
    return mentions


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _on_word_edges(text: str, start: int, end: int) -> bool:
    """False when the span starts or ends inside a word ("Apple" in "Pineapple")."""
    if start > 0 and _word_char(text[start - 1]) and _word_char(text[start]):
        return False
    return not (end < len(text) and _word_char(text[end]) and _word_char(text[end - 1]))


def occurrences(text: str, surface: str) -> list[tuple[int, int]]:
    """Every occurrence of `surface` by `find_span`'s rules (exact, else case-insensitive) that
    does not cut a word."""
    taken: set[tuple[int, int]] = set()
    while True:
        span = find_span(text, surface, taken)
        if span is None or span in taken:
            break
        taken.add(span)
    return sorted(s for s in taken if _on_word_edges(text, *s))


def _forms(mention: str, strip_sigils: bool) -> list[str]:
    """Spellings to look for, in order. Trailing punctuation is sentence punctuation ("Paris.")
    unless the mention has inner dots (an abbreviation: "U.S.")."""
    bare = mention.strip(_EDGE)
    trimmed = bare.rstrip(_TRAILING).strip(_EDGE)
    forms = [bare, trimmed] if "." in trimmed else [trimmed, bare]
    if strip_sigils:
        forms = [f.lstrip("#@") for f in forms] + forms
    return [f for f in dict.fromkeys(forms) if f]


def locate_mentions(text: str, mentions: list[str], *, strip_sigils: bool = True) -> list[tuple[int, int]]:
    """Character spans of the mentions in `text`: all occurrences of the first form of each
    mention that occurs; mentions not in the text are dropped, and so are spans nested inside a
    longer one."""
    found: set[tuple[int, int]] = set()
    for mention in mentions:
        for form in _forms(mention, strip_sigils):
            spans = occurrences(text, form)
            if spans:
                found.update(spans)
                break
    return sorted(
        s for s in found if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in found)
    )


def _type_name(types: dict[str, str], label: str) -> str:
    return types.get(label, label.lower())


def _example_types(example: Example, types: dict[str, str]) -> list[tuple[str, str]]:
    """An example's (surface, label) pairs in the stage's label set (MISC pools serve OTHER)."""
    out = []
    for surface, etype in example.entities:
        label = normalise_type(etype, types)
        if label is not None:
            out.append((surface, label))
    return out


# -- spans -------------------------------------------------------------------------------------


class SpansParams(FewShotParams, FanOutParams):
    shots: int = Field(default=0, ge=0, le=32)  # MQA is zero-shot; examples optional
    types: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TYPES), min_length=1)
    # per_type: one question per type (MQA's form); all: one question for all types.
    questions: Literal["per_type", "all"] = "per_type"
    # The published script's 10 tokens cut long lists short.
    max_tokens: int = Field(default=32, gt=0)
    context: list[ContextField] = Field(default_factory=lambda: ["visual_context", "caption"])
    context_chars: int = Field(default=400, ge=0)
    strip_sigils: bool = True
    mode: Literal["completion", "chat"] = "completion"
    template: str = "spans.mqa.v1.jinja"


SPANS_INSTRUCTION = (
    "Read each post and the description of its image. Answer each question with the names, copied "
    "exactly from the text and separated by commas, or with none."
)


@stages.register("spans", version=1)
class SpansStage(Stage):
    name = "spans"
    version = 1
    Params = SpansParams
    reads = ("text",)
    optional_reads = ("caption", "visual_context")
    writes = ("spans", "examples")
    roles = {"llm": Role(needs=frozenset({"completion"}), description="the LLM proposing mentions")}

    @classmethod
    def role_needs(cls, params: SpansParams) -> dict[str, frozenset[str]]:
        return {"llm": frozenset({"completion" if params.mode == "completion" else "chat"})}

    def __init__(self, params: SpansParams, model, context):
        super().__init__(params, model, context)
        self.params: SpansParams = params
        self.shots = ShotPicker(params, context.seed, context.note_once, self.qualified_name)

    async def setup(self) -> None:
        await self.shots.setup()

    def questions(self) -> list[tuple[str | None, str]]:
        """(type label or None for all types, question)."""
        if self.params.questions == "all":
            kinds = ", ".join(self.params.types.values())
            return [(None, f"List the named entities ({kinds}) in the text.")]
        return [(label, f"List the {name} entities in the text.") for label, name in self.params.types.items()]

    def _example(self, example: Example) -> dict:
        typed = _example_types(example, self.params.types)
        qas = []
        for label, question in self.questions():
            surfaces = [s for s, t in typed if label is None or t == label]
            qas.append({"question": question, "answer": ", ".join(dict.fromkeys(surfaces)) or "none"})
        image = clip(example.caption, self.params.context_chars) if example.caption and self.params.context else ""
        return {"text": example.text, "image": image, "qas": qas}

    def build_requests(self, record: Record, examples: list[Example]) -> list[tuple[str | None, ModelRequest]]:
        p = self.params
        shown = [self._example(ex) for ex in examples]
        image = image_words(record, p.context, p.context_chars)
        sampling = Sampling(temperature=0.0, max_tokens=p.max_tokens, stop=("\n",))
        out = []
        for label, question in self.questions():
            prompt = render(p.template, instruction=SPANS_INSTRUCTION, examples=shown, text=record.text, image=image, question=question)
            request = (
                ModelRequest(messages=(Message(role="user", content=prompt),), sampling=sampling)
                if p.mode == "chat"
                else ModelRequest(prompt=prompt, sampling=sampling)
            )
            out.append((label, request))
        return out

    async def process(self, record: Record) -> None:
        examples = await self.shots.apick(record)
        asked = self.build_requests(record, examples)
        outcomes = await fan_out([self.model.generate(request) for _, request in asked], lead=self.params.warm_prefix)
        report_failed(record, self.qualified_name, "span", [o for o in outcomes if not o.ok], len(asked))
        mentions = [m for o in outcomes if o.ok for m in parse_mentions(o.value.text)]
        spans = locate_mentions(record.text, mentions, strip_sigils=self.params.strip_sigils)
        by = f"{self.qualified_name} {self.model.backend.identity().get('name', '?')}"
        record.spans = [Entity(text=record.text[s:e], start=s, end=e, provenance={"span": by}) for s, e in spans]
        record.provenance["spans"] = by


# -- choice ------------------------------------------------------------------------------------


class ChoiceParams(FewShotParams, MultipleChoiceParams):
    shots: int = Field(default=0, ge=0, le=32)
    types: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TYPES), min_length=1)
    none_text: str = "none of the above"
    context: list[ContextField] = Field(default_factory=lambda: ["visual_context", "caption"])
    template: str = "choice.mqa.v1.jinja"


CHOICE_INSTRUCTION = (
    "Read the post and the description of its image, then answer the question with the letter of "
    "the one true statement."
)
NONE_KEY = "__none__"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@stages.register("choice", version=1)
class ChoiceStage(Stage):
    name = "choice"
    version = 1
    Params = ChoiceParams
    reads = ("text", "spans")
    optional_reads = ("caption", "visual_context")
    writes = ("entities", "examples")
    roles = {"llm": Role(needs=frozenset({"completion", "choice_probs"}), description="the LLM answering the questions")}

    @classmethod
    def role_needs(cls, params: ChoiceParams) -> dict[str, frozenset[str]]:
        return choice_needs(params.mode)

    def __init__(self, params: ChoiceParams, model, context):
        super().__init__(params, model, context)
        self.params: ChoiceParams = params
        self.shots = ShotPicker(params, context.seed, context.note_once, self.qualified_name)

    async def setup(self) -> None:
        await self.shots.setup()

    def options(self, span: str) -> Options:
        items = [(label, f"{span} is {_article(name)} {name} entity") for label, name in self.params.types.items()]
        return lay_out(items, (NONE_KEY, self.params.none_text), self.params.lettering, self.params.none_position)

    @staticmethod
    def question(span: str) -> str:
        return f'Which statement about "{span}" is true?'

    def _example(self, example: Example) -> dict | None:
        typed = _example_types(example, self.params.types)
        if not typed:
            return None
        surface, label = typed[0]
        options = self.options(surface)
        image = clip(example.caption, self.params.context_chars) if example.caption and self.params.context else ""
        return {"text": example.text, "image": image, "question": self.question(surface),
                "options": options.lines, "answer": options.letter_of(label)}

    def build_request(self, record: Record, span: str, examples: list[Example]) -> tuple[ModelRequest, Options]:
        p = self.params
        options = self.options(span)
        prompt = render(
            p.template,
            instruction=CHOICE_INSTRUCTION,
            examples=[e for e in (self._example(ex) for ex in examples) if e],
            text=record.text,
            image=image_words(record, p.context, p.context_chars),
            question=self.question(span),
            options=options.lines,
        )
        return choice_request(prompt, p.mode), options

    async def process(self, record: Record) -> None:
        spans = record.spans or []
        examples = await self.shots.apick(record)
        # One question per distinct mention: a repeated mention's question is the same request.
        questions = {text: self.build_request(record, text, examples) for text in dict.fromkeys(s.text for s in spans)}
        answers = dict(zip(questions, await fan_out(
            [self.model.choose(request, list(options.letters)) for request, options in questions.values()],
            lead=self.params.warm_prefix,
        )))
        by = f"{self.qualified_name} {self.model.backend.identity().get('name', '?')}"
        entities, fallbacks, failed = [], 0, []
        for span in spans:
            options, outcome = questions[span.text][1], answers[span.text]
            reading = read_outcome(outcome, options)
            if reading is None:
                failed.append(outcome)
                continue
            fallbacks += not reading.usable
            if reading.chosen == NONE_KEY:
                continue
            type_probs, none_prob = without_none(reading.probs, NONE_KEY)
            entities.append(
                Entity(
                    text=span.text, start=span.start, end=span.end, type=reading.chosen,
                    score=reading.probs[reading.chosen], type_probs=type_probs, none_prob=none_prob,
                    provenance={**span.provenance, "type": by, "type_probs": by, "none_prob": by},
                )
            )
        report_failed(record, self.qualified_name, "span", failed, len(spans))
        if fallbacks and self.context.stats is not None:
            self.context.stats.count(FALLBACK_COUNTER, fallbacks)
        record.entities = entities
        record.provenance["entities"] = by
