"""Vision stages: caption, ocr, objects, visual_context (see docs/vision.md).

- `objects` and `ocr` run local CPU tools (an OpenCV DNN detector, RapidOCR) in worker threads and
  cache their raw results in the run's one generation cache, keyed by the image's content hash and
  the tool's weights hash; a cache hit reads the file's bytes but never decodes the image.
- `caption` asks an image-text model through the stage's `ModelClient` (transformers, vLLM or any
  OpenAI-compatible server) or takes a precomputed caption (input field or BLIP-2/mPLUG-Owl file).
  With no model configured it falls back to the text of objects + OCR and says so once.
- `visual_context` writes the ITA-style text view of all of that for text-only models.

A record without an image is left alone by the image stages; a bad image is a per-record error of
kind "image" in the stage that needed it, and text-only stages still run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..cache import cache_key
from ..calls import through_cache
from ..errors import ConfigError
from ..images import ImageOptions, decode_image, materialize_for_model, read_image_bytes
from ..model_io import ImagePart, Message, ModelRequest, Sampling, TextPart
from ..records import DetectedObject, OcrLine, Record
from ..registry import stages
from ..vision.boxes import filter_detections
from ..vision.captions import caption_index, image_key
from ..vision.context import ContextStyle, build_visual_context
from .base import Role, Stage, StageParams


class VisionParams(StageParams, ImageOptions):
    """Parameters every image-reading stage accepts (where images are, and what we refuse)."""

    def image_options(self, input_dir: Path | None = None) -> ImageOptions:
        """The options, with the run's input folder as the image root unless `image_root` is set."""
        options = ImageOptions.model_validate({k: getattr(self, k) for k in ImageOptions.model_fields})
        if options.image_root is None and input_dir is not None:
            options.image_root = str(input_dir)
        return options


# -- local tools (detector, OCR) with results cached per image hash -----------------------------------


class _CachedToolStage(Stage):
    """Runs a local tool on each record's image; raw results are cached under the image's hash."""

    tool_kind: ClassVar[str]  # "detector" / "ocr": the cache key's backend kind
    reads = ("image",)
    optional_reads = ()

    tool: Any = None
    _identity: dict[str, Any] | None = None

    def build_tool(self) -> Any:
        raise NotImplementedError

    def run_tool(self, image: Any) -> list[Any]:
        raise NotImplementedError

    def from_cached(self, value: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def apply(self, record: Record, raw: list[Any]) -> None:
        raise NotImplementedError

    # A detector / OCR engine declared under `backends:` and bound with `backend: <role>` replaces
    # the one named in the stage's parameters (so a profile can swap it); see the subclasses' roles.

    async def setup(self) -> None:
        self.tool = self.model.backend if self.model is not None else self.build_tool()
        if self.model is not None and not self.tool.capabilities & {self.capability}:
            raise ConfigError(f"{self.qualified_name}: backend {self.tool.kind!r} cannot {self.capability}")
        await asyncio.to_thread(self.tool.load)
        self._identity = await asyncio.to_thread(self.tool.identity)

    def cache_key_for(self, image_sha256: str) -> str:
        return cache_key(
            backend_kind=self.tool_kind,
            model_identity=self._identity or {},
            request={"image": image_sha256},
            stage=self.name,
            stage_version=self.version,
        )

    async def process(self, record: Record) -> None:
        if not record.image:
            return
        if self.tool is None:
            await self.setup()
        options = self.params.image_options(self.context.input_dir)
        raw = await asyncio.to_thread(read_image_bytes, record.image, options)

        async def run_on_image() -> dict[str, Any]:
            loaded = await asyncio.to_thread(decode_image, raw, options)
            found = await asyncio.to_thread(self.run_tool, loaded.image)
            return {"items": [item.model_dump(mode="json") for item in found]}

        value, _ = await through_cache(
            self.context.cache, self.cache_key_for(raw.sha256), self.name, self.context.stats, run_on_image
        )
        found = self.from_cached(value)
        self.apply(record, found)


class ObjectsParams(VisionParams):
    detector: str = "ssd_mobilenet_v2_coco"  # a name in mmie_pipe.adapters.detectors.detectors
    detector_options: dict[str, Any] = Field(default_factory=dict)  # the detector's own Config fields
    score_threshold: float = Field(default=0.4, ge=0, le=1)
    nms_iou: float = Field(default=0.5, ge=0, le=1)
    max_objects: int = Field(default=20, ge=1)
    labels: list[str] | None = None  # keep only these labels


@stages.register("objects")
class ObjectsStage(_CachedToolStage):
    """Labelled, scored boxes from an object detector (threshold, per-label NMS, top-k)."""

    name = "objects"
    version = 1
    Params = ObjectsParams
    writes = ("objects",)
    tool_kind = "detector"
    capability = "detect"
    roles = {"detector": Role(needs=frozenset({"detect"}), required=False)}

    def build_tool(self):
        from ..adapters.detectors import build_detector

        return build_detector(self.params.detector, self.params.detector_options)

    def run_tool(self, image: Any) -> list[DetectedObject]:
        return self.tool.detect(image)

    def from_cached(self, value: dict[str, Any]) -> list[DetectedObject]:
        return [DetectedObject.model_validate(item) for item in value["items"]]

    def apply(self, record: Record, raw: list[DetectedObject]) -> None:
        p = self.params
        record.objects = filter_detections(
            raw, score_threshold=p.score_threshold, iou_threshold=p.nms_iou, max_objects=p.max_objects, labels=p.labels
        )
        record.provenance["objects"] = f"{self.qualified_name}:{self.tool.kind}"


class OcrParams(VisionParams):
    engine: str = "rapidocr"  # a name in mmie_pipe.adapters.ocr.ocr_engines
    engine_options: dict[str, Any] = Field(default_factory=dict)  # the engine's own Config fields
    min_score: float = Field(default=0.5, ge=0, le=1)
    max_lines: int = Field(default=50, ge=1)


@stages.register("ocr")
class OcrStage(_CachedToolStage):
    """Lines of text in the image with boxes and recognition scores."""

    name = "ocr"
    version = 1
    Params = OcrParams
    writes = ("ocr",)
    tool_kind = "ocr"
    capability = "ocr"
    roles = {"ocr": Role(needs=frozenset({"ocr"}), required=False)}

    def build_tool(self):
        from ..adapters.ocr import build_ocr

        return build_ocr(self.params.engine, self.params.engine_options)

    def run_tool(self, image: Any) -> list[OcrLine]:
        return self.tool.read(image)

    def from_cached(self, value: dict[str, Any]) -> list[OcrLine]:
        return [OcrLine.model_validate(item) for item in value["items"]]

    def apply(self, record: Record, raw: list[OcrLine]) -> None:
        record.ocr = [line for line in raw if line.score >= self.params.min_score][: self.params.max_lines]
        record.provenance["ocr"] = f"{self.qualified_name}:{self.tool.kind}"


# -- caption ----------------------------------------------------------------------------------------

# Preset name -> (template file under prompts/, default answer length in tokens).
CAPTION_PRESETS = {
    "short": ("caption.short.v1.txt", 48),  # one sentence, BLIP-2 style
    "detailed": ("caption.detailed.v1.txt", 320),  # a paragraph, LLaVA / mPLUG-Owl style
    "blip2": ("caption.blip2.v1.txt", 40),  # BLIP-2 (OPT/T5) continues a phrase rather than following instructions
}
DERIVED = "derived:objects+ocr"


class CaptionParams(VisionParams):
    # auto: the model if one is configured, else a precomputed caption (input field, then file),
    # else the objects + OCR text. model/input/file: only that source.
    source: Literal["auto", "model", "input", "file"] = "auto"
    template: str = "short"  # preset (short | detailed | blip2), a prompt file name, or a path
    max_tokens: int | None = Field(default=None, gt=0)  # default: the preset's length
    temperature: float = Field(default=0.0, ge=0)
    captions_file: list[str] = Field(default_factory=list)  # BLIP-2 / mPLUG-Owl caption files
    captions_format: Literal["blip2", "owl"] = "blip2"
    # When no caption is available: describe the image by its objects + OCR text, or leave it empty.
    fallback: Literal["visual_context", "none"] = "visual_context"

    @field_validator("captions_file", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("template")
    @classmethod
    def _template_exists(cls, value: str) -> str:
        from ..prompts import check_template

        check_template(CAPTION_PRESETS.get(value, (value, 0))[0])
        return value


@stages.register("caption")
class CaptionStage(Stage):
    """A caption per image, from a captioning model or a precomputed source."""

    name = "caption"
    version = 1
    Params = CaptionParams
    reads = ()
    optional_reads = ("image", "caption", "objects", "ocr")
    writes = ("caption",)
    # The model is optional: without one the stage serves precomputed captions (embedded default).
    roles = {"vlm": Role(needs=frozenset({"chat", "images"}), required=False, description="an image-text model")}

    def __init__(self, params: CaptionParams, model, context):
        super().__init__(params, model, context)
        self.params: CaptionParams = params
        self.prompt = ""
        self.max_tokens = 0

    async def setup(self) -> None:
        from ..prompts import template_source

        p = self.params
        file_name, default_tokens = CAPTION_PRESETS.get(p.template, (p.template, 128))
        self.prompt = template_source(file_name).strip()
        self.max_tokens = p.max_tokens or default_tokens
        if p.source == "model" and self.model is None:
            raise ConfigError("caption: source is 'model' but the stage has no backend (add `backend: <role>`)")
        if p.source == "file" and not p.captions_file:
            raise ConfigError("caption: source is 'file' but no captions_file is given")
        if p.captions_file:
            missing = [f for f in p.captions_file if not Path(f).is_file()]
            if missing:
                raise ConfigError(f"caption: captions_file not found: {', '.join(missing)}")
            await asyncio.to_thread(caption_index, tuple(p.captions_file), p.captions_format)
        if self.model is None and p.source == "auto":
            self.context.note_once(
                "caption: no captioning model configured (none can be obtained offline); using each record's "
                "precomputed caption"
                + (f" or the {p.captions_format} captions file" if p.captions_file else "")
                + (", otherwise a description built from detected objects and OCR text" if p.fallback == "visual_context" else "")
            )

    # sources, each returning (caption, provenance) or None
    def _from_input(self, record: Record) -> tuple[str, str] | None:
        if record.caption and record.caption.strip():
            return record.caption, record.provenance.get("caption", "input")
        return None

    def _from_file(self, record: Record) -> tuple[str, str] | None:
        if not self.params.captions_file:
            return None
        key = image_key(record)
        text = caption_index(tuple(self.params.captions_file), self.params.captions_format).get(key or "")
        return (text, f"file:{self.params.captions_format}") if text else None

    def _from_objects_and_ocr(self, record: Record) -> tuple[str, str] | None:
        text = build_visual_context(
            objects=record.objects, caption=None, ocr=record.ocr,
            style=ContextStyle(order=("objects", "ocr"), separator=". ", labelled=True),
        )
        return (text, DERIVED) if text else None

    async def _from_model(self, record: Record) -> tuple[str, str] | None:
        if self.model is None or not record.image:
            return None
        options = self.params.image_options(self.context.input_dir)
        raw = await asyncio.to_thread(read_image_bytes, record.image, options)
        loaded = await asyncio.to_thread(decode_image, raw, options)
        scratch = self.context.run_dir / "images" if self.context.run_dir else None
        path, mime, digest = await asyncio.to_thread(materialize_for_model, loaded, raw, scratch)
        request = ModelRequest(
            messages=(Message(role="user", content=(ImagePart(sha256=digest, mime=mime, path=path), TextPart(text=self.prompt))),),
            sampling=Sampling(max_tokens=self.max_tokens, temperature=self.params.temperature),
        )
        response = await self.model.generate(request)
        text = " ".join(response.text.split())
        if not text:
            raise ValueError("the captioning model returned an empty caption")
        return text, f"model:{self.model.backend.kind}:{self.model.backend.identity().get('name', '?')}"

    async def process(self, record: Record) -> None:
        p = self.params
        found: tuple[str, str] | None = None
        if p.source in ("auto", "model"):
            found = await self._from_model(record)
        if found is None and p.source in ("auto", "input"):
            found = self._from_input(record)
        if found is None and p.source in ("auto", "file"):
            found = self._from_file(record)
        if found is None and p.fallback == "visual_context" and p.source != "model":
            found = self._from_objects_and_ocr(record)
        if found is not None:
            record.caption, record.provenance["caption"] = found


# -- visual context ---------------------------------------------------------------------------------


class VisualContextParams(StageParams):
    order: list[Literal["objects", "caption", "ocr"]] = Field(
        default_factory=lambda: ["objects", "caption", "ocr"], min_length=1
    )
    max_objects: int = Field(default=10, ge=0)
    min_object_score: float = Field(default=0.0, ge=0, le=1)
    dedupe_objects: bool = True
    max_ocr_lines: int = Field(default=10, ge=0)
    min_ocr_score: float = Field(default=0.0, ge=0, le=1)
    max_chars: int = Field(default=512, ge=16)
    separator: str = " | "
    labelled: bool = False


@stages.register("visual_context")
class VisualContextStage(Stage):
    """Object tags, caption and OCR text as one line of text (ITA's image-to-text alignment)."""

    name = "visual_context"
    version = 1
    Params = VisualContextParams
    reads = ()
    optional_reads = ("objects", "caption", "ocr")
    writes = ("visual_context",)

    async def process(self, record: Record) -> None:
        p: VisualContextParams = self.params  # type: ignore[assignment]
        order = tuple(dict.fromkeys(p.order))
        # A caption derived from objects + OCR would only repeat them.
        if record.provenance.get("caption") == DERIVED:
            order = tuple(part for part in order if part != "caption")
        style = ContextStyle(
            order=order, max_objects=p.max_objects, min_object_score=p.min_object_score,
            dedupe_objects=p.dedupe_objects, max_ocr_lines=p.max_ocr_lines, min_ocr_score=p.min_ocr_score,
            max_chars=p.max_chars, separator=p.separator, labelled=p.labelled,
        )
        text = build_visual_context(objects=record.objects, caption=record.caption, ocr=record.ocr, style=style)
        if text is not None:
            record.visual_context = text
            used = [part for part in order if (part == "objects" and record.objects) or (part == "ocr" and record.ocr)
                    or (part == "caption" and record.caption)]
            record.provenance["visual_context"] = f"{self.qualified_name}:{'+'.join(used)}"
