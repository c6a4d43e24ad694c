"""The caption stage: precomputed sources, the model path (fake backend, a real OpenAI-compatible
HTTP exchange, vLLM's message form), the embedded default, and the shipped `ita` pipeline."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

np = pytest.importorskip("numpy")
from PIL import Image  # noqa: E402

from mmie_pipe.adapters.fake import FakeBackend, FakeConfig  # noqa: E402
from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig  # noqa: E402
from mmie_pipe.cache import GenerationCache  # noqa: E402
from mmie_pipe.calls import ModelClient  # noqa: E402
from mmie_pipe.errors import ConfigError  # noqa: E402
from mmie_pipe.model_io import ImagePart, TextPart  # noqa: E402
from mmie_pipe.prompts import template_source  # noqa: E402
from mmie_pipe.records import Box, DetectedObject, OcrLine, Record  # noqa: E402
from mmie_pipe.stages.base import StageContext  # noqa: E402
from mmie_pipe.stages.vision import CaptionParams, CaptionStage  # noqa: E402

SHARED_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "captions"


def run(coro):
    return asyncio.run(coro)


def photo(path: Path, color=(200, 30, 30)) -> Path:
    Image.new("RGB", (32, 24), color).save(path)
    return path


def make_stage(tmp_path, model=None, **params) -> CaptionStage:
    stage = CaptionStage(CaptionParams(**params), model, StageContext(cache=None, run_dir=tmp_path))
    run(stage.setup())
    return stage


def client(tmp_path, backend) -> ModelClient:
    return ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="caption", stage_version=1)


def with_tools(record: Record) -> Record:
    record.objects = [DetectedObject(label="dog", score=0.9, box=Box(xmin=0, ymin=0, xmax=5, ymax=5))]
    record.ocr = [OcrLine(text="Go Team", score=0.9, box=Box(xmin=0, ymin=0, xmax=5, ymax=5))]
    return record


# -- precomputed sources and the embedded default ---------------------------------------------------


def test_no_model_keeps_input_caption_and_says_so_once(tmp_path):
    stage = make_stage(tmp_path)
    record = Record(id="1", text="t", image=str(photo(tmp_path / "a.png")), caption="a red square")
    run(stage.process(record))
    assert record.caption == "a red square" and record.provenance["caption"] == "input"
    assert len(stage.context.notes) == 1 and "no captioning model configured" in stage.context.notes[0]


def test_no_model_no_caption_falls_back_to_objects_and_ocr(tmp_path):
    stage = make_stage(tmp_path)
    record = with_tools(Record(id="1", text="t", image=str(photo(tmp_path / "a.png"))))
    run(stage.process(record))
    assert record.caption == "objects: dog. text in image: Go Team"
    assert record.provenance["caption"] == "derived:objects+ocr"
    # ... unless the fallback is switched off.
    record = with_tools(Record(id="2", text="t", image=str(photo(tmp_path / "a.png"))))
    run(make_stage(tmp_path, fallback="none").process(record))
    assert record.caption is None


def test_caption_files_in_both_formats(tmp_path):
    blip = tmp_path / "blip2.txt"
    blip.write_text("71044.jpg :a man holding a trophy\n16_05_01_127.jpg :a crowd at a stadium\n")
    owl = tmp_path / "owl.txt"
    owl.write_text("imgid:71044###The image shows a man\nholding a golden trophy.\nimgid:O_1###Another.\n")
    by_meta = Record(id="a", text="t", meta={"image_id": "71044.jpg"})
    by_path = Record(id="b", text="t", image="/data/images/16_05_01_127.jpg")
    stage = make_stage(tmp_path, source="file", captions_file=str(blip))
    run(stage.process(by_meta))
    run(stage.process(by_path))
    assert by_meta.caption == "a man holding a trophy" and by_meta.provenance["caption"] == "file:blip2"
    assert by_path.caption == "a crowd at a stadium"
    record = Record(id="c", text="t", meta={"image_id": "71044"})
    run(make_stage(tmp_path, source="file", captions_file=[str(owl)], captions_format="owl").process(record))
    assert record.caption == "The image shows a man\nholding a golden trophy."
    missing = Record(id="d", text="t", meta={"image_id": "999"})
    run(stage.process(missing))
    assert missing.caption is None  # no entry and nothing to describe


@pytest.mark.skipif(not (SHARED_CAPTIONS / "blip2_twitter2015.txt").is_file(), reason="shared caption data not present")
def test_real_blip2_caption_file():
    stage = CaptionStage(CaptionParams(source="auto", captions_file=[str(SHARED_CAPTIONS / "blip2_twitter2015.txt")]), None, StageContext())
    run(stage.setup())
    record = Record(id="108911", text="Bears vs Packers tonight", meta={"image_id": "108911.jpg"})
    run(stage.process(record))
    assert "bears" in record.caption and record.provenance["caption"] == "file:blip2"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no backend"):
        make_stage(tmp_path, source="model")
    with pytest.raises(ConfigError, match="no captions_file"):
        make_stage(tmp_path, source="file")
    with pytest.raises(ConfigError, match="captions_file not found"):
        make_stage(tmp_path, captions_file=str(tmp_path / "nope.txt"))
    # A missing template is caught with the parameters, before any stage or model is set up.
    with pytest.raises(ValidationError, match="unknown prompt template"):
        CaptionParams(template="no-such-template.txt")


# -- the model path -------------------------------------------------------------------------------------


def test_model_caption_request_and_cache(tmp_path):
    backend = FakeBackend(FakeConfig(reply="  A red\nsquare. "))
    stage = make_stage(tmp_path, model=client(tmp_path, backend), template="detailed")
    image = photo(tmp_path / "a.png")
    record = Record(id="1", text="t", image=str(image), caption="an input caption")
    run(stage.process(record))
    assert record.caption == "A red square." and record.provenance["caption"] == "model:fake:fake"
    (request,) = backend.requests
    image_part, text_part = request.messages[0].content
    assert isinstance(image_part, ImagePart) and isinstance(text_part, TextPart)
    assert image_part.sha256 == ImagePart.from_path(image).sha256 and image_part.mime == "image/png"
    assert text_part.text == template_source("caption.detailed.v1.txt").strip()
    assert request.sampling.max_tokens == 320 and stage.context.notes == []
    # The same image under another name: a cache hit, no second model call.
    copy = tmp_path / "copy.png"
    copy.write_bytes(image.read_bytes())
    again = Record(id="2", text="t", image=str(copy))
    run(stage.process(again))
    assert again.caption == "A red square." and len(backend.requests) == 1


def test_model_path_errors_and_no_image(tmp_path):
    stage = make_stage(tmp_path, model=client(tmp_path, FakeBackend(FakeConfig(reply="x"))))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match=r"^image .*empty\.jpg: file is empty"):
        run(stage.process(Record(id="1", text="t", image=str(empty))))
    text_only = Record(id="2", text="t", caption="given")
    run(stage.process(text_only))  # no image: the model is not asked, the input caption stays
    assert text_only.caption == "given" and stage.model.backend.requests == []
    blank = make_stage(tmp_path, model=client(tmp_path, FakeBackend(FakeConfig(reply="   "))))
    with pytest.raises(ValueError, match="empty caption"):
        run(blank.process(Record(id="3", text="t", image=str(photo(tmp_path / "b.png", (1, 2, 3))))))


def test_exif_rotated_images_are_sent_upright(tmp_path):
    backend = FakeBackend(FakeConfig(reply="ok"))
    stage = make_stage(tmp_path, model=client(tmp_path, backend))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.new("RGB", (40, 20), "blue").save(path, format="JPEG", exif=exif)
    run(stage.process(Record(id="1", text="t", image=str(path))))
    sent = backend.requests[0].images[0]
    assert sent.path != str(path) and Image.open(sent.path).size == (20, 40)


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"path": self.path, "body": body})
        reply = {
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a red square on white"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_server_gets_the_image_as_a_data_url(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = OpenAIBackend(OpenAIConfig(model="llava-hf/llava-1.5-7b-hf", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0))
        image = photo(tmp_path / "square.png")
        record = Record(id="1", text="t", image=str(image))

        async def go():
            stage = CaptionStage(CaptionParams(), client(tmp_path, backend), StageContext(run_dir=tmp_path))
            await stage.setup()
            await stage.process(record)
            await backend.close()

        run(go())
    finally:
        server.shutdown()
        server.server_close()
    assert record.caption == "a red square on white"
    assert record.provenance["caption"] == "model:openai:llava-hf/llava-1.5-7b-hf"
    (call,) = _Recorder.bodies
    assert call["path"] == "/v1/chat/completions"
    (message,) = call["body"]["messages"]
    image_item = next(p for p in message["content"] if p["type"] == "image_url")
    text_item = next(p for p in message["content"] if p["type"] == "text")
    url = image_item["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image.read_bytes()
    assert text_item["text"] == template_source("caption.short.v1.txt").strip()
    assert call["body"]["max_tokens"] == 48 and call["body"]["temperature"] == 0.0


def test_vllm_receives_the_image_as_a_data_url(tmp_path):
    from mmie_pipe.adapters.vllm_backend import VllmBackend

    backend = FakeBackend(FakeConfig(reply="ok"))
    stage = make_stage(tmp_path, model=client(tmp_path, backend))
    image = photo(tmp_path / "v.png")
    run(stage.process(Record(id="1", text="t", image=str(image))))
    (message,) = VllmBackend.chat_messages(backend.requests[0].messages)  # what vLLM's engine is given
    url = message["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == image.read_bytes()


# -- the shipped pipeline -----------------------------------------------------------------------------


def test_ita_pipeline_runs_without_a_model(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("rapidocr_onnxruntime")
    skimage = pytest.importorskip("skimage")
    from mmie_pipe.pipeline import load_pipeline, validate_pipeline
    from mmie_pipe.runner import Runner

    raw, source = load_pipeline("ita", overrides=[f"runtime.cache_path={tmp_path / 'c.sqlite'}"])
    report = validate_pipeline(raw, source)
    assert report.ok, report.problems
    # Images live beside the input file (paths outside its folder are refused by default).
    shutil.copy(Path(skimage.__file__).parent / "data" / "chelsea.png", tmp_path / "chelsea.png")
    lines = [
        {"id": "cat", "text": "My cat Chelsea", "image": "chelsea.png"},
        {"id": "given", "text": "Game day", "image": "chelsea.png", "caption": "a cat watching football"},
        {"id": "text", "text": "no image"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = run(Runner(report.config).run(src, tmp_path / "out", progress=False))
    assert summary.errors == 0 and summary.records == 3
    out = {o["id"]: o for o in map(json.loads, (tmp_path / "out" / "predictions.jsonl").read_text().splitlines())}
    assert out["cat"]["caption"] == "objects: cat" and out["cat"]["provenance"]["caption"] == "derived:objects+ocr"
    assert out["cat"]["visual_context"] == "cat"
    assert out["given"]["caption"] == "a cat watching football"
    assert out["given"]["visual_context"] == "cat | a cat watching football"
    assert "caption" not in out["text"] and "visual_context" not in out["text"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "no captioning model configured" in json.dumps(manifest)
    assert summary.calls.calls + summary.calls.cache_hits == 4  # objects + ocr for two images
    again = run(Runner(report.config).run(src, tmp_path / "again", progress=False))
    assert again.calls.calls == 0 and again.calls.cache_hits == 4  # tool results come from the cache


def test_runner_hands_a_backend_to_the_caption_stage(tmp_path):
    """A configured captioner is used through the runner."""
    from mmie_pipe.pipeline import validate_pipeline
    from mmie_pipe.runner import Runner

    raw = {
        "name": "cap",
        "backends": {"vlm": {"kind": "fake", "reply": "a red square"}},
        "stages": [{"stage": "caption", "backend": "vlm"}],
        "runtime": {"cache_path": str(tmp_path / "c.sqlite")},
    }
    report = validate_pipeline(raw)
    assert report.ok, report.problems
    runner = Runner(report.config)
    (stage,) = runner.build_stages()
    assert stage.model is not None
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "1", "text": "t", "image": str(photo(tmp_path / "a.png"))}) + "\n")
    run(runner.run(src, tmp_path / "out", progress=False))
    (out,) = map(json.loads, (tmp_path / "out" / "predictions.jsonl").read_text().splitlines())
    assert out["caption"] == "a red square" and out["provenance"]["caption"] == "model:fake:fake"
