"""Text-in-image readers behind one small interface, looked up by name in `ocr_engines`.

Built in: `rapidocr`, the PP-OCRv4 detection + recognition ONNX models that ship inside the
`rapidocr-onnxruntime` wheel (Chinese and English text), run by onnxruntime on CPU.
"""

from __future__ import annotations

from abc import abstractmethod
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..errors import ConfigError, MissingDependency
from ..records import OcrLine
from ..registry import Registry, backends
from ..vision.boxes import clip_box
from ..files import file_sha256, package_file
from .tools import LocalTool, ToolConfig

if TYPE_CHECKING:
    from PIL.Image import Image

ocr_engines = Registry("ocr_engines")


class OcrConfig(ToolConfig):
    pass


class OcrEngine(LocalTool):
    base_capabilities = frozenset({"ocr"})

    @abstractmethod
    def read(self, image: "Image") -> list[OcrLine]:
        """Text lines with axis-aligned pixel boxes, in reading order as the engine gives them."""


RAPIDOCR_PACKAGE = "rapidocr_onnxruntime"
RAPIDOCR_DEFAULT_MODELS = {
    "det": ("models", "ch_PP-OCRv4_det_infer.onnx"),
    "cls": ("models", "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "rec": ("models", "ch_PP-OCRv4_rec_infer.onnx"),
}


class RapidOcrConfig(OcrConfig):
    kind: Literal["rapidocr"] = "rapidocr"
    # Lines recognised with a lower confidence are dropped by the engine itself.
    min_score: float = Field(default=0.5, ge=0, le=1)
    use_angle_cls: bool = True  # detect upside-down lines (costs a little time)
    det_model_path: str | None = None
    rec_model_path: str | None = None
    cls_model_path: str | None = None
    threads: int | None = Field(default=None, ge=1)  # onnxruntime intra-op threads; None: all cores
    # Text detection resizes the image so that its shorter ("min", the engine's default, 736) or
    # longer ("max") side is this long. min/736 reads small text best; max/960 is 3-5x faster on
    # CPU for typical post images (see docs/vision.md).
    det_limit_type: Literal["min", "max"] | None = None
    det_limit_side_len: int | None = Field(default=None, ge=32)


@backends.register("rapidocr")
@ocr_engines.register("rapidocr")
class RapidOcr(OcrEngine):
    """Text lines in images with RapidOCR (PP-OCR ONNX models inside the wheel), CPU."""

    kind = "rapidocr"
    Config = RapidOcrConfig

    def __init__(self, config: RapidOcrConfig):
        super().__init__(config)
        self.config: RapidOcrConfig = config
        self.engine = None

    def _model_files(self) -> dict[str, str]:
        files = {}
        for part, default in RAPIDOCR_DEFAULT_MODELS.items():
            explicit = getattr(self.config, f"{part}_model_path")
            path = explicit or package_file(RAPIDOCR_PACKAGE, *default)
            if path is None:
                raise MissingDependency("rapidocr-onnxruntime", "vision", "OCR")
            files[part] = str(path)
        return files

    def identity(self) -> dict[str, Any]:
        try:
            version = metadata.version("rapidocr-onnxruntime")
        except metadata.PackageNotFoundError:
            version = None
        models = {}
        for part, path in self._model_files().items():
            try:
                models[part] = file_sha256(path)
            except OSError as exc:
                raise ConfigError(f"OCR model file {path} cannot be read: {exc}") from exc
        return {
            "name": self.kind, "version": version, "models": models,
            "min_score": self.config.min_score, "use_angle_cls": self.config.use_angle_cls,
            "det_limit": [self.config.det_limit_type, self.config.det_limit_side_len],
        }

    def load(self) -> None:
        if self.engine is not None:
            return
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise MissingDependency("rapidocr-onnxruntime", "vision", "OCR") from exc
        c = self.config
        files = self._model_files()
        kwargs: dict[str, Any] = {
            "text_score": c.min_score, "use_cls": c.use_angle_cls,
            "det_model_path": files["det"], "rec_model_path": files["rec"], "cls_model_path": files["cls"],
        }
        if c.threads:
            kwargs.update(intra_op_num_threads=c.threads)
        if c.det_limit_type:
            kwargs["det_limit_type"] = c.det_limit_type
        if c.det_limit_side_len:
            kwargs["det_limit_side_len"] = c.det_limit_side_len
        self.engine = RapidOCR(**kwargs)

    def read(self, image: "Image") -> list[OcrLine]:
        import numpy as np

        self.load()
        width, height = image.size
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # the engine expects OpenCV's BGR
        with self._lock:  # RapidOCR keeps per-call settings on the instance
            result, _ = self.engine(bgr)
        lines = []
        for points, text, score in result or ():
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            box = clip_box(min(xs), min(ys), max(xs), max(ys), width, height)
            text = str(text).strip()
            if box is not None and text:
                lines.append(OcrLine(text=text, score=round(min(max(float(score), 0.0), 1.0), 4), box=box))
        return lines


def build_ocr(kind: str, options: dict[str, Any]) -> OcrEngine:
    return ocr_engines.build(kind, options)
