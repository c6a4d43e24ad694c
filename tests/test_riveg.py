"""RiVEG stages (expand, entail, ground) on real parts: the COCO detector on real photos, tiny
random-weight LLaVA and OWLv2 built here, the embedded model on a real llama-server; the scripted
backend only where a test needs one entity's call to fail."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from mmie_pipe import registry
from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.records import Box, Entity, Record
from mmie_pipe.runner import Runner
from mmie_pipe.stages.riveg import EntailEntities, ExpandEntities, GroundEntities
from mmie_pipe.vision.coords import qwen_resized, to_pixels
from stage_bench import Bench

ROOT = Path(__file__).resolve().parents[1]


def run(coro):
    return asyncio.run(coro)


def entity(post: str, surface: str, etype: str, **extra) -> Entity:
    start = post.index(surface)
    return Entity(text=surface, start=start, end=start + len(surface), type=etype, **extra)


@pytest.fixture
def bench(tmp_path):
    return Bench(tmp_path)


@pytest.fixture
def picture(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "street.jpg"
    Image.new("RGB", (64, 48), (30, 120, 200)).save(path)
    return path


# -- coordinate conventions -------------------------------------------------------------------------


def test_coordinate_conventions_convert_to_pixels():
    assert to_pixels([10, 20, 110, 220], "pixels", 640, 480) == Box(xmin=10, ymin=20, xmax=110, ymax=220)
    assert to_pixels([0.25, 0.5, 0.75, 1.0], "0-1", 640, 480) == Box(xmin=160, ymin=240, xmax=480, ymax=480)
    assert to_pixels([500, 0, 1000, 250], "0-1000", 640, 480) == Box(xmin=320, ymin=0, xmax=640, ymax=120)
    # Qwen2.5-VL sees 640x480 as 644x476 (multiples of 28): its pixels scale back to ours.
    assert qwen_resized(640, 480) == (644, 476)
    assert to_pixels([322, 0, 644, 476], "qwen2.5-vl", 640, 480) == Box(xmin=320, ymin=0, xmax=640, ymax=480)


def test_qwen_resize_bounds_the_area():
    w, h = qwen_resized(4000, 1000, max_pixels=28 * 28 * 100)
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 28 * 28 * 100 and abs(w / h - 4) < 0.5
    w, h = qwen_resized(10, 10)
    assert w % 28 == 0 and h % 28 == 0 and w * h >= 56 * 56


def test_boxes_are_clipped_sorted_or_rejected():
    assert to_pixels([-50, -10, 700, 500], "pixels", 640, 480) == Box(xmin=0, ymin=0, xmax=640, ymax=480)
    assert to_pixels([110, 220, 10, 20], "pixels", 640, 480) == Box(xmin=10, ymin=20, xmax=110, ymax=220)
    assert to_pixels([1.2, 1.5, 2.0, 3.0], "0-1", 640, 480) is None  # wholly outside the image
    with pytest.raises(ValueError, match="4 numbers"):
        to_pixels([1, 2, 3], "pixels", 640, 480)
    with pytest.raises(ValueError, match="finite"):
        to_pixels([0, 0, math.nan, 5], "pixels", 640, 480)


# -- the COCO detector on real photos ---------------------------------------------------------------

try:  # real photos ship in scikit-image
    import skimage

    PHOTOS = Path(skimage.__file__).parent / "data"
except ImportError:
    PHOTOS = None


@pytest.fixture(scope="module")
def ssd():
    pytest.importorskip("cv2")
    if PHOTOS is None:
        pytest.skip("scikit-image's photos are not installed")
    backend = registry.backends.build("ssd_mobilenet_v2_coco", {})
    run(backend.start())
    return backend


def test_detector_grounds_a_person_entity_on_the_astronaut_photo(bench, ssd):
    post = "Eileen Collins was the first woman to pilot the Space Shuttle , NASA says from Houston"
    record = Record(id="a", text=post, image=str(PHOTOS / "astronaut.png"),
                    entities=[entity(post, "Eileen Collins", "PER"), entity(post, "NASA", "ORG"), entity(post, "Houston", "LOC")])
    bench.process(record, bench.stage(EntailEntities, {}, ssd), bench.stage(GroundEntities, {}, ssd))
    person, org, loc = record.entities
    assert person.groundable is True and person.groundable_prob > 0.5
    assert person.box.iou(Box(xmin=0, ymin=0, xmax=380, ymax=512)) > 0.7  # the astronaut, by eye
    assert person.box_score == pytest.approx(person.groundable_prob, abs=1e-3)
    assert person.provenance["boxes"] == "ground.v1 ssd_mobilenet_v2_coco"
    assert person.provenance["groundable_prob"] == "entail.v1 ssd_mobilenet_v2_coco"
    for other in (org, loc):  # no COCO class pictures an organisation or a city
        assert other.groundable is False and not other.boxes
    assert record.ok
    # One detection for both stages: entailment ran the detector, grounding read its cached result.
    assert (bench.stats.calls, bench.stats.cache_hits) == (1, 1)


def test_detector_uses_the_description_to_fit_a_class(bench, ssd):
    post = "Chelsea refuses to get off my laptop again"
    named = entity(post, "Chelsea", "PER", description="a pet cat")
    record = Record(id="c", text=post, image=str(PHOTOS / "chelsea.png"), entities=[named])
    bench.process(record, bench.stage(EntailEntities, {}, ssd), bench.stage(GroundEntities, {}, ssd))
    assert record.entities[0].groundable is True and record.entities[0].box.area > 0.3 * 451 * 300
    unnamed = Record(id="d", text=post, image=str(PHOTOS / "chelsea.png"), entities=[entity(post, "Chelsea", "PER")])
    bench.process(unnamed, bench.stage(EntailEntities, {}, ssd))
    assert unnamed.entities[0].groundable is False  # a PER with no description: no person in the photo


def test_without_an_image_every_entity_is_ungroundable(bench, ssd):
    post = "Eileen Collins flies again"
    record = Record(id="n", text=post, entities=[entity(post, "Eileen Collins", "PER")])
    bench.process(record, bench.stage(EntailEntities, {}, ssd), bench.stage(GroundEntities, {}, ssd))
    assert record.entities[0].groundable is False and record.entities[0].groundable_prob == 0.0
    assert bench.stats.calls == 0


# -- a failed grounding call is an error on its entity ----------------------------------------------


def boxes_for_alice_only(request) -> str:
    prompt = request.messages[0].content[-1].text
    if "Find Alice " in prompt:
        return '{"bbox_2d": [100, 0, 600, 2000]}'
    raise ConnectionError("the server went away")


def test_a_failed_grounding_call_is_an_error_on_that_entity(bench, picture):
    post = "Alice and Bob met Carol"
    fake = FakeBackend(FakeConfig(), responder=boxes_for_alice_only)
    record = Record(id="f", text=post, image=str(picture), entities=[
        entity(post, "Alice", "PER", groundable=True), entity(post, "Bob", "PER", groundable=True),
        entity(post, "Carol", "PER", groundable=False)])
    bench.process(record, bench.stage(GroundEntities, {"method": "vlm", "coordinates": "0-1000", "query": "name"}, fake))
    alice, bob, carol = record.entities
    assert alice.box == Box(xmin=6.4, ymin=0, xmax=38.4, ymax=48)  # 0-1000 of 64x48, clipped at the bottom
    assert not bob.boxes and bob.groundable is True  # untouched: its question failed
    assert [e.reason for e in record.errors] == ["entity 'Bob' [10:13]: the server went away"]
    assert len(fake.requests) == 2  # Carol was already ungroundable: never asked


def test_runner_keeps_the_record_when_one_entity_fails(tmp_path, picture):
    post = "Alice and Bob met"
    line = {"id": "r1", "text": post, "image": str(picture),
            "entities": [entity(post, "Alice", "PER").model_dump(), entity(post, "Bob", "PER").model_dump()]}
    (tmp_path / "in.jsonl").write_text(json.dumps(line) + "\n")
    config = validate_pipeline({
        "name": "ground-only", "inputs": ["entities"], "backends": {"vlm": {"kind": "fake"}},
        "stages": [{"stage": "ground", "backend": "vlm", "params": {"method": "vlm", "query": "name", "coordinates": "0-1000"}}],
    }).config
    fake = FakeBackend(FakeConfig(), responder=boxes_for_alice_only)
    summary = run(Runner(config, cache=GenerationCache(tmp_path / "c.sqlite"), backends={"vlm": fake}).run(tmp_path / "in.jsonl", tmp_path / "run"))
    out = json.loads((tmp_path / "run" / "predictions.jsonl").read_text())
    assert summary.records == 1 and summary.errors == 1
    assert out["entities"][0]["boxes"] and not out["entities"][1]["boxes"]
    assert out["errors"][0]["stage"] == "ground.v1" and "'Bob'" in out["errors"][0]["reason"]


# -- tiny random-weight models: vlm (transformers LLaVA) and open_vocab (OWLv2) ---------------------


def test_vlm_entail_and_ground_on_a_tiny_llava(bench, picture, tmp_path):
    pytest.importorskip("transformers")
    from tiny_vision_models import build_tiny_llava

    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig

    backend = TransformersBackend(TransformersConfig(model=str(build_tiny_llava(tmp_path / "llava")), family="llava", device="cpu"))
    run(backend.start())
    post = "a person with a cat"
    record = Record(id="v", text=post, image=str(picture), entities=[entity(post, "person", "PER"), entity(post, "cat", "MISC")])
    entail = bench.stage(EntailEntities, {"method": "vlm", "query": "name", "threshold": 0.5}, backend)
    ground = bench.stage(GroundEntities, {"method": "vlm", "query": "name", "only_groundable": False,
                                          "coordinates": "0-1000", "max_tokens": 12, "max_reasks": 0}, backend)
    bench.process(record, entail, ground)
    for e in record.entities:
        assert 0.0 <= e.groundable_prob <= 1.0
        assert e.provenance["groundable_prob"].startswith("entail.v1 ")
    # Random weights cannot write a box: each entity has a clipped box or an error naming it.
    for e in record.entities:
        named = [err for err in record.errors if f"'{e.text}'" in err.reason]
        assert (e.box is not None and e.box.xmax <= 64 and e.box.ymax <= 48) or (named and named[0].stage == "ground.v1")
    calls = bench.stats.calls
    again = Record(id="v", text=post, image=str(picture), entities=[entity(post, "person", "PER"), entity(post, "cat", "MISC")])
    bench.process(again, entail, ground)
    assert bench.stats.calls == calls  # everything from the cache
    assert [e.groundable_prob for e in again.entities] == [e.groundable_prob for e in record.entities]


def test_vlm_yes_no_probabilities_sum_to_one(bench, picture, tmp_path):
    pytest.importorskip("transformers")
    from tiny_vision_models import build_tiny_llava

    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig

    backend = TransformersBackend(TransformersConfig(model=str(build_tiny_llava(tmp_path / "llava")), family="llava", device="cpu"))
    run(backend.start())
    stage = bench.stage(EntailEntities, {"method": "vlm", "query": "name"}, backend)
    post = "a cat"
    request = run(stage.vlm_request(Record(id="p", text=post, image=str(picture)), entity(post, "cat", "MISC")))
    response = run(stage.model.choose(request, ("yes", "no")))
    probs = response.choice.probs
    assert set(probs) == {"yes", "no"} and sum(probs.values()) == pytest.approx(1.0) and probs[response.text] >= 0.5
    assert 0.0 < probs["yes"] < 1.0


def test_open_vocab_queries_the_descriptions_on_a_tiny_owlv2(bench, tmp_path):
    pytest.importorskip("transformers")
    if PHOTOS is None:
        pytest.skip("scikit-image's photos are not installed")
    from PIL import Image
    from tiny_vision_models import build_tiny_owlv2

    directory = build_tiny_owlv2(tmp_path / "owl")
    backend = registry.backends.build("transformers_zero_shot", {"model": str(directory), "device": "cpu", "min_score": 0.0})
    run(backend.start())
    post = "Tom and his cat"
    record = Record(id="o", text=post, image=str(PHOTOS / "chelsea.png"),
                    entities=[entity(post, "Tom", "PER", description="person"), entity(post, "cat", "MISC", description="cat")])
    params = {"query": "description", "score_threshold": 0.0}
    bench.process(record, bench.stage(EntailEntities, params, backend), bench.stage(GroundEntities, params, backend))
    raw = backend.detect(Image.open(PHOTOS / "chelsea.png").convert("RGB"), ["cat", "person"])
    for e in record.entities:
        mine = sorted((d for d in raw if d.label == e.description), key=lambda d: -d.score)
        if mine:
            assert e.groundable is True and e.box == mine[0].box and e.box_score == mine[0].score
        else:
            assert e.groundable is False and not e.boxes
    assert (bench.stats.calls, bench.stats.cache_hits) == (1, 1)


# -- pipeline files and the embedded model ----------------------------------------------------------


@pytest.mark.parametrize("profile", [None, "riveg-vllm", "riveg-ofa"])
def test_riveg_pipeline_and_profiles_validate(profile):
    raw, source = load_pipeline("riveg", profile=profile)
    report = validate_pipeline(raw, source)
    assert report.ok, report.problems
    kinds = {role: spec["kind"] for role, spec in report.config.backends.items()}
    expected = {None: "ssd_mobilenet_v2_coco", "riveg-vllm": "openai", "riveg-ofa": "ofa"}[profile]
    assert kinds["entailer"] == kinds["grounder"] == expected


def test_method_must_fit_the_backend(bench, ssd):
    stage = bench.stage(EntailEntities, {"method": "vlm"}, ssd)
    with pytest.raises(Exception, match="does not fit backend 'ssd_mobilenet_v2_coco'"):
        run(stage.setup())


@pytest.mark.server
def test_expand_and_caption_entailment_on_the_embedded_model(llama_server, bench):
    from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig

    backend = OpenAIBackend(OpenAIConfig(model="smollm2", base_url=llama_server.base_url, flavor="llamacpp", supports_images=False))
    post = "Eileen Collins was the first woman to pilot the Space Shuttle"
    record = Record(id="e", text=post, caption="an astronaut in a white space suit holding a helmet",
                    entities=[entity(post, "Eileen Collins", "PER"), entity(post, "Space Shuttle", "MISC")])
    expand = bench.stage(ExpandEntities, {}, backend)
    entail = bench.stage(EntailEntities, {"method": "caption"}, backend)
    bench.process(record, expand, entail)
    assert record.ok, record.errors
    for e in record.entities:
        assert e.description and "\n" not in e.description
        assert 0.0 <= e.groundable_prob <= 1.0 and e.groundable == (e.groundable_prob >= 0.5)
        assert e.provenance["description"] == "expand.v1 smollm2"
    assert bench.stats.calls == 4  # one description and one yes/no question per entity


@pytest.mark.server
def test_riveg_runs_end_to_end_on_the_examples(llama_server, tmp_path):
    raw, source = load_pipeline("riveg", overrides=[
        "backends.llm.kind=openai", f"backends.llm.base_url={llama_server.base_url}", "backends.llm.model=smollm2"])
    raw["backends"]["llm"] = {"kind": "openai", "model": "smollm2", "base_url": llama_server.base_url, "flavor": "llamacpp",
                              "supports_images": False}
    config = validate_pipeline(raw, source).config
    summary = run(Runner(config, cache=GenerationCache(tmp_path / "c.sqlite")).run(ROOT / "examples" / "tweets.jsonl", tmp_path / "run", limit=6))
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert summary.records == len(rows) == 6 and summary.errors == 0
    decided = [e for r in rows for e in r.get("entities", [])]
    assert decided and all("groundable" in e and "description" in e for e in decided)
    with_image = [e for r in rows if r.get("image") for e in r.get("entities", []) if e["groundable"]]
    assert all(e["boxes"] for e in with_image)


def test_validate_checks_the_method_against_the_bound_backend():
    raw, source = load_pipeline("riveg", overrides=["stages.entail.params.method=vlm"])
    problems = validate_pipeline(raw, source).problems
    assert len(problems) == 1 and "entail" in problems[0] and "images" in problems[0], problems
