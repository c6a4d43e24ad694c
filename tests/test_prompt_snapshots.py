"""The rendered prompts of the knowledge, spans, choice and relations stages, against reviewed
snapshots (tests/snapshots/). A changed prompt must be a new template version: update a snapshot
only with that (MMIE_UPDATE_SNAPSHOTS=1)."""

import os
from pathlib import Path

import pytest

from mmie_pipe.fewshot import load_pool
from mmie_pipe.records import Record
from mmie_pipe.stages.base import StageContext
from mmie_pipe.stages.knowledge import KnowledgeParams, KnowledgeStage
from mmie_pipe.stages.mqa import ChoiceParams, ChoiceStage, SpansParams, SpansStage
from mmie_pipe.stages.relations import RelationsParams, RelationsStage

SNAPSHOTS = Path(__file__).parent / "snapshots"
POOL = load_pool("knowledge_tweets.v1")
RECORD = Record(id="q1", text="Kawhi Leonard wins Block of the Year at the #NBAAwards", caption="a basketball player holding a trophy")


def _prompts() -> dict[str, str]:
    ctx = StageContext()
    knowledge = KnowledgeStage(KnowledgeParams(shots=2, selection="first"), None, ctx)
    spans = SpansStage(SpansParams(shots=1, selection="first"), None, ctx)
    spans_all = SpansStage(SpansParams(questions="all"), None, ctx)
    choice = ChoiceStage(ChoiceParams(), None, ctx)
    choice_first = ChoiceStage(ChoiceParams(lettering="lower", none_position="first"), None, ctx)
    relations = RelationsStage(RelationsParams(), None, ctx)
    return {
        "knowledge_2shot": knowledge.build_request(RECORD, list(POOL[:2])).prompt,
        "spans_per_type_1shot": "\n-----\n".join(r.prompt for _, r in spans.build_requests(RECORD, [POOL[0]])),
        "spans_all_types": spans_all.build_requests(RECORD, [])[0][1].prompt,
        "choice_1shot": choice.build_request(RECORD, "Kawhi Leonard", [POOL[0]])[0].prompt,
        "choice_lower_none_first": choice_first.build_request(RECORD, "Kawhi Leonard", [])[0].prompt,
        "relations_type": relations.type_question(RECORD, "Kawhi Leonard")[0].prompt,
        "relations_per_misc": relations.relation_question(RECORD, "Kawhi Leonard", "NBAAwards", ("per", "misc"))[0].prompt,
    }


@pytest.mark.parametrize("name", sorted(_prompts()))
def test_prompt_matches_snapshot(name):
    rendered = _prompts()[name]
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("MMIE_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert rendered == path.read_text(encoding="utf-8")


def test_every_question_of_a_record_shares_its_prefix_and_ends_with_the_item():
    ctx = StageContext()
    choice = ChoiceStage(ChoiceParams(shots=1, selection="first"), None, ctx)
    a = choice.build_request(RECORD, "Kawhi Leonard", [POOL[0]])[0].prompt
    b = choice.build_request(RECORD, "NBAAwards", [POOL[0]])[0].prompt
    shared = os.path.commonprefix([a, b])
    assert shared.endswith('Question: Which statement about "') and RECORD.text in shared and RECORD.caption in shared
    spans = [r.prompt for _, r in SpansStage(SpansParams(shots=1, selection="first"), None, ctx).build_requests(RECORD, [POOL[0]])]
    assert os.path.commonprefix(spans).endswith("Question: List the ")
