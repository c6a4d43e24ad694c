"""GEM's `rerank` stage: the entropy gate, the candidates, the question a VLM and a text LLM see,
and the counts in the run summary (the last against the real llama-server)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from mmie_pipe.records import Entity, Record
from mmie_pipe.reranking import Question, normalized_entropy, question_request, top_types
from mmie_pipe.calls import CallStats
from mmie_pipe.stages.base import StageContext
from mmie_pipe.stages.rerank import RerankParams, RerankStage


def entity(text, post, **fields) -> Entity:
    start = post.index(text)
    return Entity(text=text, start=start, end=start + len(text), **fields)


def stage(model=None, **params) -> RerankStage:
    s = RerankStage(RerankParams(**params), model, StageContext(stats=CallStats()))
    if s.params.granularity == "fine":
        from mmie_pipe.data.hierarchy import load_hierarchy

        s.hierarchy = load_hierarchy(s.params.hierarchy)
    return s


# -- the gate ---------------------------------------------------------------------------------------

def test_normalised_entropy_hand_computed():
    assert normalized_entropy({"PER": 0.25, "LOC": 0.25, "ORG": 0.25, "MISC": 0.25}) == pytest.approx(1.0)
    assert normalized_entropy({"PER": 1.0, "LOC": 0.0, "ORG": 0.0, "MISC": 0.0}) == 0.0
    assert normalized_entropy({"PER": 1.0}) == 0.0  # one type: nothing to be unsure about
    # -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 2 = 0.325083 / 0.693147
    assert normalized_entropy({"a": 0.9, "b": 0.1}) == pytest.approx(0.468996, abs=1e-6)
    # -(0.97 ln 0.97 + 3 * 0.01 ln 0.01) / ln 4 = 0.167701 / 1.386294
    assert normalized_entropy({"a": 0.97, "b": 0.01, "c": 0.01, "d": 0.01}) == pytest.approx(0.120971, abs=1e-6)
    # unnormalised input is renormalised
    assert normalized_entropy({"a": 2.0, "b": 2.0}) == pytest.approx(1.0)


def test_gate_and_candidates():
    post = "Messi scores for Barcelona in Paris"
    s = stage(gamma=0.2, top_k=5)
    confident = entity("Messi", post, type="PER", type_probs={"PER": 0.97, "LOC": 0.01, "ORG": 0.01, "MISC": 0.01})
    unsure = entity("Barcelona", post, type="LOC", type_probs={"PER": 0.05, "LOC": 0.5, "ORG": 0.4, "MISC": 0.05})
    assert s.candidates(confident) is None  # 0.121 <= 0.2: keeps its type
    # K = 5 is larger than the 4-type label set: all 4, most probable first, ties in label order
    assert s.candidates(unsure) == ["LOC", "ORG", "PER", "MISC"]
    assert stage(gamma=0.2, top_k=2).candidates(unsure) == ["LOC", "ORG"]
    assert stage(gamma=0.99).candidates(unsure) is None  # 0.73 is below a gamma of 0.99
    assert top_types({"a": 0.1, "b": 0.3, "c": 0.3}, 2) == ["b", "c"]


def test_entities_without_a_distribution_keep_or_are_asked():
    post = "Messi scores"
    plain = entity("Messi", post, type="PER")
    assert stage().candidates(plain) is None
    assert stage(missing_distribution="uniform", top_k=3).candidates(plain) == ["PER", "LOC", "ORG"]


def test_fine_candidates_restricted_to_the_coarse_type():
    post = "Messi scores"
    # a fine distribution where non-person types are more probable than most person ones
    probs = {"athlete": 0.30, "city": 0.25, "sports_team": 0.2, "musician": 0.1, "actor": 0.08, "politician": 0.07}
    e = entity("Messi", post, type="person", fine_type="athlete", type_probs=probs)
    s = stage(granularity="fine", top_k=5)
    person = set(s.hierarchy.fine_of("person"))
    options = s.candidates(e)
    assert options == ["athlete", "musician", "actor", "politician"]
    assert set(options) <= person
    # the coarse type comes from the fine type's parent when `type` is not a coarse FMNERG type
    e2 = entity("Messi", post, type="PER", fine_type="athlete", type_probs=probs)
    assert s.candidates(e2) == options
    # no fine distribution and no fine type yet: always asked, among the coarse type's fine types
    e3 = entity("Messi", post, type="location")
    assert s.candidates(e3) == list(s.hierarchy.fine_of("location"))[:5]


def test_hierarchy_is_fmnergs():
    from mmie_pipe.data.hierarchy import load_hierarchy

    h = load_hierarchy("fmnerg")
    assert len(h.coarse_types) == 8 and len(h.fine_types) == 51
    sizes = {c: len(h.fine_of(c)) for c in h.coarse_types}
    assert sizes == {"person": 13, "organization": 10, "location": 7, "art": 5, "other": 5, "building": 4,
                     "product": 4, "event": 3}
    assert h.parent("sports_team") == "organization"


def test_question_never_contains_its_answer_and_letters_map_back():
    q = Question("Messi scores in Paris", "Paris", ("LOC", "ORG", "PER"), caption="a stadium")
    request = question_request(q)
    text = request.messages[0].content
    assert "A. location" in text and "B. organization" in text and "C. person" in text
    assert "Image: a stadium" in text and request.images == []
    assert text.rstrip().endswith("only.")  # ends where the answer letter goes
    assert q.type_of("B") == "ORG" and q.letter_of("PER") == "C"


# -- with models ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    pytest.importorskip("peft")
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("llama"))[0]


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "pitch.jpg"
    Image.new("RGB", (64, 48), (40, 160, 60)).save(path)
    return path


def client_for(backend, tmp_path):
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.calls import ModelClient

    return ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="rerank", stage_version=1)


def unsure_record(picture=None) -> Record:
    post = "Barcelona beat Madrid"
    probs = {"PER": 0.1, "LOC": 0.45, "ORG": 0.4, "MISC": 0.05}
    return Record(id="r1", text=post, image=str(picture) if picture else None, caption="a football pitch",
                  entities=[entity("Barcelona", post, type="LOC", type_probs=probs),
                            entity("Madrid", post, type="LOC", type_probs={"PER": 0.0, "LOC": 1.0, "ORG": 0.0, "MISC": 0.0})])


def test_vlm_sees_the_image(tiny_llava, picture, tmp_path):
    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig
    from mmie_pipe.adapters.transformers_vision import vision_inputs

    backend = TransformersBackend(TransformersConfig(model=str(tiny_llava), family="llava", device="cpu"))
    client = client_for(backend, tmp_path)
    s = RerankStage(RerankParams(), client, StageContext(stats=CallStats()))
    record = unsure_record(picture)

    async def go():
        await backend.start()
        await s.setup()
        image = await s._image(record)
        await s.process(record)
        return image

    image = asyncio.run(go())
    assert image is not None
    request = question_request(Question(record.text, "Barcelona", ("LOC", "ORG", "PER", "MISC"), None, image))
    assert request.images and "Image:" not in request.messages[0].content[1].text  # the image, not the caption
    inputs = vision_inputs(backend, request)
    image_id = backend.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert "pixel_values" in inputs and int((inputs["input_ids"] == image_id).sum()) == 16  # one per 8x8 patch of the 32x32 image
    assert record.entities[0].type in {"PER", "LOC", "ORG", "MISC"} and 0 < record.entities[0].score <= 1
    assert s.context.stats.events["rerank.gated"] == 1 and s.context.stats.events["rerank.reranked"] == 1
    assert record.entities[1].type == "LOC"  # one-hot: never asked


def test_text_llm_sees_the_caption(tiny_llama, picture, tmp_path):
    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig
    from mmie_pipe.cache import GenerationCache

    backend = TransformersBackend(TransformersConfig(model=str(tiny_llama), device="cpu"))
    cache = GenerationCache(tmp_path / "c.sqlite")
    client = client_for(backend, tmp_path)
    client.cache = cache
    s = RerankStage(RerankParams(), client, StageContext(stats=CallStats()))
    record = unsure_record(picture)

    async def go():
        await s.setup()
        assert await s._image(record) is None  # a text model gets no image part
        await s.process(record)

    asyncio.run(go())
    # the request that went to the model (found by its cache key) carried the caption as text
    sent = question_request(Question(record.text, "Barcelona", ("LOC", "ORG", "PER", "MISC"), "a football pitch"))
    assert "Image: a football pitch" in sent.messages[0].content and not sent.images
    from mmie_pipe.model_io import Constraint

    asked = sent.model_copy(update={"constraint": Constraint(choices=("A", "B", "C", "D")), "score_choices": True})
    assert cache.get(client.key(asked)) is not None
    assert s.context.stats.events["rerank.entities"] == 2 and s.context.stats.events["rerank.gated"] == 1


@pytest.mark.server
def test_counts_in_the_run_summary(llama_server, tmp_path):
    from mmie_pipe.pipeline import validate_pipeline
    from mmie_pipe.runner import Runner

    post = "Barcelona beat Madrid at Wembley"
    rows = []
    for i in range(3):
        rows.append({"id": f"p{i}", "text": post, "caption": "football players on a pitch", "entities": [
            entity("Barcelona", post, type="LOC", type_probs={"PER": 0.1, "LOC": 0.45, "ORG": 0.4, "MISC": 0.05}).model_dump(),
            entity("Madrid", post, type="ORG", type_probs={"PER": 0.2, "LOC": 0.3, "ORG": 0.3, "MISC": 0.2}).model_dump(),
            entity("Wembley", post, type="LOC", type_probs={"PER": 0.0, "LOC": 1.0, "ORG": 0.0, "MISC": 0.0}).model_dump(),
        ]})
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = validate_pipeline({
        "name": "gem-test", "inputs": ["entities"],
        "backends": {"llm": {"kind": "openai", "model": "smollm2", "base_url": llama_server.base_url, "flavor": "llamacpp"}},
        "stages": [{"stage": "rerank", "backend": "llm", "params": {"gamma": 0.2}}],
    }).config
    summary = asyncio.run(Runner(config).run(tmp_path / "in.jsonl", tmp_path / "run"))
    counts = summary.as_dict()
    assert counts["rerank.entities"] == 9 and counts["rerank.gated"] == 6 and counts["rerank.reranked"] == 6
    out = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    changed = sum(e["type"] != o["type"] for r, row in zip(out, rows) for e, o in zip(r["entities"], row["entities"]))
    assert counts["rerank.changed"] == changed
    assert all(r["entities"][2]["type"] == "LOC" for r in out)  # confident: kept
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["attempts"][-1]["rerank.gated"] == 6
    assert math.isclose(sum(1 for _ in out), 3)


def test_fmnerg_is_found_under_the_data_root(shared_data):
    from mmie_pipe.data import load_split
    from mmie_pipe.data.hierarchy import load_hierarchy

    records = list(load_split("fmnerg", "dev", shared_data, captions="blip2"))
    assert len(records) == 1500 and sum(len(r.gold.entities) for r in records) == 2450
    hierarchy = load_hierarchy("fmnerg")
    entities = [e for r in records for e in r.gold.entities]
    assert all(hierarchy.parent(e.fine_type) == e.type for e in entities)  # the shipped hierarchy fits the data
    assert any(e.boxes for e in entities) and sum(r.caption is not None for r in records) > 1400
