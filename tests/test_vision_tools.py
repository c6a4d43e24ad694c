"""Object detection and OCR on real photos (from the scikit-image wheel) and rendered text; caching
of tool results per image hash; NMS; the ITA-style visual context."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("rapidocr_onnxruntime")
skimage = pytest.importorskip("skimage")
matplotlib = pytest.importorskip("matplotlib")

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from mmie_pipe.cache import GenerationCache  # noqa: E402
from mmie_pipe.records import Box, DetectedObject, OcrLine, Record  # noqa: E402
from mmie_pipe.stages.base import StageContext  # noqa: E402
from mmie_pipe.stages.vision import ObjectsParams, ObjectsStage, OcrParams, OcrStage, VisualContextParams, VisualContextStage  # noqa: E402
from mmie_pipe.vision.boxes import filter_detections, non_max_suppression  # noqa: E402

PHOTOS = Path(skimage.__file__).parent / "data"
FONT = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return GenerationCache(tmp_path_factory.mktemp("cache") / "c.sqlite")


@pytest.fixture(scope="module")
def objects_stage(cache):
    stage = ObjectsStage(ObjectsParams(), None, StageContext(cache=cache))
    run(stage.setup())
    return stage


@pytest.fixture(scope="module")
def ocr_stage(cache):
    stage = OcrStage(OcrParams(), None, StageContext(cache=cache))
    run(stage.setup())
    return stage


def detect(stage, name: str) -> Record:
    record = Record(id=name, text="post", image=str(PHOTOS / name))
    run(stage.process(record))
    return record


@pytest.mark.parametrize("photo, label", [("astronaut.png", "person"), ("chelsea.png", "cat"), ("coffee.png", "cup")])
def test_detector_finds_the_main_object(objects_stage, photo, label):
    record = detect(objects_stage, photo)
    labels = [o.label for o in record.objects]
    assert label in labels, labels
    best = max(record.objects, key=lambda o: o.score)
    assert best.label == label and best.score > 0.6
    width, height = Image.open(PHOTOS / photo).size
    assert all(0 <= o.box.xmin < o.box.xmax <= width and 0 <= o.box.ymin < o.box.ymax <= height for o in record.objects)
    assert record.provenance["objects"] == "objects.v1:ssd_mobilenet_v2_coco"


def test_person_box_covers_the_astronaut(objects_stage):
    person = next(o for o in detect(objects_stage, "astronaut.png").objects if o.label == "person")
    assert person.box.iou(Box(xmin=0, ymin=0, xmax=380, ymax=512)) > 0.7


def test_threshold_and_label_filter(cache):
    stage = ObjectsStage(ObjectsParams(score_threshold=0.95), None, StageContext(cache=cache))
    run(stage.setup())
    assert detect(stage, "astronaut.png").objects == []
    stage = ObjectsStage(ObjectsParams(labels=["cat"]), None, StageContext(cache=cache))
    run(stage.setup())
    assert [o.label for o in detect(stage, "chelsea.png").objects] == ["cat"]


def test_detections_are_cached_by_image_content(objects_stage, tmp_path, monkeypatch):
    first = detect(objects_stage, "chelsea.png")
    # A copy under another name has the same bytes: served from the cache, the detector is not run.
    copy = tmp_path / "renamed.png"
    copy.write_bytes((PHOTOS / "chelsea.png").read_bytes())
    monkeypatch.setattr(objects_stage.tool, "detect", lambda image: pytest.fail("detector ran on a cached image"))
    again = Record(id="copy", text="post", image=str(copy))
    run(objects_stage.process(again))
    assert again.objects == first.objects
    assert objects_stage.context.cache.info()["stages"]["objects"]["entries"] >= 1


def render_text(path: Path, text: str) -> Path:
    img = Image.new("RGB", (720, 220), "white")
    ImageDraw.Draw(img).text((40, 70), text, fill="black", font=ImageFont.truetype(str(FONT), 44))
    img.save(path)
    return path


def test_ocr_reads_rendered_text(ocr_stage, tmp_path):
    record = Record(id="sign", text="post", image=str(render_text(tmp_path / "sign.png", "Welcome to Berlin 2024")))
    run(ocr_stage.process(record))
    text = " ".join(line.text for line in record.ocr)
    assert "Berlin" in text and "2024" in text, text
    line = record.ocr[0]
    assert line.score > 0.8 and line.box.xmin < 80 and line.box.xmax > 400 and 40 < line.box.ymin < 120
    assert record.provenance["ocr"] == "ocr.v1:rapidocr"


def test_ocr_on_a_photo_without_text_is_empty(ocr_stage):
    record = Record(id="cat", text="post", image=str(PHOTOS / "chelsea.png"))
    run(ocr_stage.process(record))
    assert record.ocr == []


def test_no_image_means_nothing_to_do(objects_stage, ocr_stage):
    record = Record(id="t", text="text only")
    run(objects_stage.process(record))
    run(ocr_stage.process(record))
    assert record.objects is None and record.ocr is None and record.errors == []


def obj(label, score, x0, y0, x1, y1):
    return DetectedObject(label=label, score=score, box=Box(xmin=x0, ymin=y0, xmax=x1, ymax=y1))


def test_nms_is_per_label():
    boxes = [obj("dog", 0.9, 0, 0, 10, 10), obj("dog", 0.8, 1, 1, 11, 11), obj("cat", 0.7, 1, 1, 11, 11), obj("dog", 0.6, 50, 50, 60, 60)]
    kept = non_max_suppression(boxes, 0.5)
    assert [(o.label, o.score) for o in kept] == [("dog", 0.9), ("cat", 0.7), ("dog", 0.6)]
    top = filter_detections(boxes, score_threshold=0.65, iou_threshold=0.5, max_objects=1)
    assert [(o.label, o.score) for o in top] == [("dog", 0.9)]


def test_visual_context_order_length_and_derived_caption():
    record = Record(
        id="v", text="post", caption="A man walks a dog in Paris.",
        objects=[obj("person", 0.9, 0, 0, 5, 5), obj("dog", 0.8, 0, 0, 5, 5), obj("person", 0.7, 6, 6, 9, 9)],
        ocr=[OcrLine(text="EIFFEL", score=0.9, box=Box(xmin=0, ymin=0, xmax=5, ymax=5))],
    )
    run(VisualContextStage(VisualContextParams(), None, StageContext()).process(record))
    assert record.visual_context == "person dog | A man walks a dog in Paris. | EIFFEL"
    assert record.provenance["visual_context"] == "visual_context.v1:objects+caption+ocr"

    params = VisualContextParams(order=["ocr", "caption"], labelled=True, separator="; ", max_chars=40)
    run(VisualContextStage(params, None, StageContext()).process(record))
    assert record.visual_context == "text in image: EIFFEL; caption: A man"
    assert len(record.visual_context) <= 40

    record.provenance["caption"] = "derived:objects+ocr"  # the caption repeats objects + OCR: skip it
    run(VisualContextStage(VisualContextParams(), None, StageContext()).process(record))
    assert record.visual_context == "person dog | EIFFEL"

    empty = Record(id="e", text="post")
    run(VisualContextStage(VisualContextParams(), None, StageContext()).process(empty))
    assert empty.visual_context is None
