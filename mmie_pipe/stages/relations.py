"""`relations`: MQA for relation extraction with given head and tail (MNRE).

Per (head, tail) pair, one multiple-choice question whose options verbalise the relations
allowed for the pair's entity types ("X lives in Y", "X was born in Y", ... "X and Y have no known
relation"). Verbalisations and the type-pair table are a data file (`prompts/relations/*.yaml`);
several verbalisations may stand for one label, and the label's probability is their sum.

MNRE gives no entity types, so by default the stage first asks each argument's type with the same
kind of question ("X is a person / an organization / a location / something else"), then offers
the relations of the most probable type pair that has any (P(head type) x P(tail type)). With
`argument_types: given`, typed arguments (an NER stage's entities) skip that question.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import permutations
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from ..calls import fan_out
from ..errors import ConfigError, StageInputError
from ..model_io import ModelRequest
from ..prompts import render
from ..records import Entity, Record, Relation
from ..registry import stages
from .base import Role, Stage
from .context import image_words
from .multiple_choice import (
    FALLBACK_COUNTER,
    MultipleChoiceParams,
    Options,
    choice_needs,
    choice_request,
    lay_out,
    read_outcome,
    report_failed,
)

PACKAGE_TABLES = resources.files("mmie_pipe") / "prompts" / "relations"
# Entity type labels of the NER data sets -> the table's kinds.
TYPE_ALIASES = {"PER": "per", "PERSON": "per", "ORG": "org", "ORGANIZATION": "org", "LOC": "loc",
                "LOCATION": "loc", "GPE": "loc", "MISC": "misc", "OTHER": "misc"}


@dataclass(frozen=True)
class RelationTable:
    name: str
    types: dict[str, str]  # kind -> how a typing option says it ("a person")
    relations: dict[str, tuple[tuple[str, str], tuple[str, ...]]]  # label -> ((head kind, tail kind), verbalisations)
    no_relation: str  # the no-relation label ("None")
    no_relation_says: str

    def pairs(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys(pair for pair, _ in self.relations.values()))

    def options_for(self, pair: tuple[str, str]) -> list[tuple[str, str]]:
        """(label, verbalisation) for every relation the type pair allows."""
        return [(label, say) for label, (p, says) in self.relations.items() if p == pair for say in says]

    @property
    def labels(self) -> list[str]:
        return [*self.relations, self.no_relation]


@lru_cache(maxsize=8)
def load_relation_table(source: str) -> RelationTable:
    """A shipped table by name (`mnre.v1`) or a YAML path."""
    path = Path(source)
    if path.is_file():
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = PACKAGE_TABLES / f"{source}.yaml"
        if not resource.is_file():
            shipped = sorted(p.name.removesuffix(".yaml") for p in PACKAGE_TABLES.iterdir() if p.name.endswith(".yaml"))
            raise ConfigError(f"relation table {source!r} is neither a file nor shipped ({', '.join(shipped)})")
        text, where = resource.read_text(encoding="utf-8"), f"relations/{source}.yaml"
    try:
        data = yaml.safe_load(text)
        types = {str(k): str(v) for k, v in data["types"].items()}
        relations = {}
        for label, spec in data["relations"].items():
            head, tail = spec["pair"]
            says = tuple(spec["say"] if isinstance(spec["say"], list) else [spec["say"]])
            if head not in types or tail not in types:
                raise ValueError(f"{label}: pair {spec['pair']} uses an undeclared type")
            for say in says:
                if "{head}" not in say or "{tail}" not in say:
                    raise ValueError(f"{label}: {say!r} must name {{head}} and {{tail}}")
            relations[str(label)] = ((head, tail), says)
        none = data["no_relation"]
        table = RelationTable(str(data.get("name", source)), types, relations, str(none["label"]), str(none["say"]))
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad relation table: {exc}") from exc
    return table


class RelationsParams(MultipleChoiceParams):
    table: str = "mnre.v1"
    # gold: the (head, tail) pairs the input gives (MNRE; labels are never read);
    # entities: every ordered pair of the record's entities.
    pairs: Literal["gold", "entities"] = "gold"
    # ask: a typing question per argument; given: use entity types where set (else ask).
    argument_types: Literal["ask", "given"] = "ask"
    context: list[Literal["visual_context", "caption"]] = Field(default_factory=lambda: ["visual_context", "caption"])
    template: str = "choice.mqa.v1.jinja"


RELATION_INSTRUCTION = (
    "Read the post and the description of its image, then answer the question with the letter of "
    "the one true statement."
)
UNKNOWN = "__unknown__"


@stages.register("relations", version=1)
class RelationsStage(Stage):
    name = "relations"
    version = 1
    Params = RelationsParams
    reads = ("text",)
    optional_reads = ("gold", "entities", "caption", "visual_context")
    writes = ("relations",)
    roles = {"llm": Role(needs=frozenset({"completion", "choice_probs"}), description="the LLM answering the questions")}

    @classmethod
    def role_needs(cls, params: RelationsParams) -> dict[str, frozenset[str]]:
        return choice_needs(params.mode)

    def __init__(self, params: RelationsParams, model, context):
        super().__init__(params, model, context)
        self.params: RelationsParams = params
        self.table = load_relation_table(params.table)

    def _pairs(self, record: Record) -> list[tuple[Entity, Entity]]:
        if self.params.pairs == "gold":
            if record.gold is None or not record.gold.relations:
                raise StageInputError("relations: pairs is 'gold' but the record has no gold head/tail pairs")
            return [(r.head, r.tail) for r in record.gold.relations]
        return list(permutations(record.entities or [], 2))

    def _prompt(self, record: Record, question: str, options: Options) -> ModelRequest:
        prompt = render(
            self.params.template,
            instruction=RELATION_INSTRUCTION,
            examples=[],
            text=record.text,
            image=image_words(record, self.params.context, self.params.context_chars),
            question=question,
            options=options.lines,
        )
        return choice_request(prompt, self.params.mode)

    def type_question(self, record: Record, argument: str) -> tuple[ModelRequest, Options]:
        options = lay_out([(kind, f"{argument} is {says}") for kind, says in self.table.types.items()], None, self.params.lettering)
        return self._prompt(record, f'What is "{argument}" in this post?', options), options

    def relation_question(self, record: Record, head: str, tail: str, pair: tuple[str, str]) -> tuple[ModelRequest, Options]:
        items = [(label, say.format(head=head, tail=tail)) for label, say in self.table.options_for(pair)]
        none = (self.table.no_relation, self.table.no_relation_says.format(head=head, tail=tail))
        options = lay_out(items, none, self.params.lettering, self.params.none_position)
        return self._prompt(record, f'How are "{head}" and "{tail}" related in this post?', options), options

    def best_pair(self, head: dict[str, float], tail: dict[str, float]) -> tuple[str, str]:
        return max(self.table.pairs(), key=lambda pair: head.get(pair[0], 0.0) * tail.get(pair[1], 0.0))

    async def _argument_types(
        self, record: Record, arguments: list[Entity]
    ) -> tuple[dict[tuple[int, int], dict[str, float] | None], int]:
        """Type distribution per argument span (None: no usable answer), and the fallback count."""
        known: dict[tuple[int, int], dict[str, float] | None] = {}
        ask: list[Entity] = []
        for arg in arguments:
            kind = TYPE_ALIASES.get((arg.type or "").upper(), (arg.type or "").lower())
            if self.params.argument_types == "given" and kind in self.table.types:
                known[(arg.start, arg.end)] = {kind: 1.0}
            elif (arg.start, arg.end) not in known:
                ask.append(arg)  # a span asked twice costs nothing: questions are per distinct text
        # One question per distinct argument text (the question reads nothing else). The relation
        # questions come after these, when the record's prefix is already cached.
        questions = {text: self.type_question(record, text) for text in dict.fromkeys(arg.text for arg in ask)}
        outcomes = await fan_out([self.model.choose(req, list(opts.letters)) for req, opts in questions.values()],
                                 lead=self.params.warm_prefix)
        fallbacks, failed, by_text = 0, [], {}
        for (text, (_, options)), outcome in zip(questions.items(), outcomes):
            reading = read_outcome(outcome, options)
            if reading is None:
                failed.append(outcome)
            else:
                fallbacks += not reading.usable
            by_text[text] = reading.probs if reading is not None and reading.usable else None
        for arg in ask:
            known[(arg.start, arg.end)] = by_text[arg.text]
        report_failed(record, self.qualified_name, "argument type", failed, len(questions))
        return known, fallbacks

    async def process(self, record: Record) -> None:
        pairs = self._pairs(record)
        types, fallbacks = await self._argument_types(record, [a for pair in pairs for a in pair])
        by = f"{self.qualified_name} {self.model.backend.identity().get('name', '?')}"
        relations: list[Relation | None] = [None] * len(pairs)
        asked: list[tuple[int, Options]] = []
        requests = []
        for i, (head, tail) in enumerate(pairs):
            head_types, tail_types = types[(head.start, head.end)], types[(tail.start, tail.end)]
            if head_types is None or tail_types is None:
                # No usable type: no relation, as for an unusable relation answer (a failed call
                # is already reported on the record).
                relations[i] = Relation(head=head, tail=tail, label=self.table.no_relation)
                continue
            request, options = self.relation_question(record, head.text, tail.text, self.best_pair(head_types, tail_types))
            asked.append((i, options))
            requests.append(request)
        outcomes = await fan_out([self.model.choose(req, list(opts.letters)) for req, (_, opts) in zip(requests, asked)])
        failed = []
        for (i, options), outcome in zip(asked, outcomes):
            reading = read_outcome(outcome, options)
            if reading is None:
                failed.append(outcome)
                continue
            fallbacks += not reading.usable
            head, tail = pairs[i]
            relations[i] = Relation(
                head=head, tail=tail, label=reading.chosen, score=reading.probs[reading.chosen], label_probs=reading.probs
            )
        report_failed(record, self.qualified_name, "relation", failed, len(asked))
        if fallbacks and self.context.stats is not None:
            self.context.stats.count(FALLBACK_COUNTER, fallbacks)
        record.relations = [r for r in relations if r is not None]
        record.provenance["relations"] = by
