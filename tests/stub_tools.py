"""Test doubles for local image tools (registered once per process; no model files)."""

from __future__ import annotations


def register_stub_detector():
    """A detector named `stub_boxes` that finds nothing, for tests about which files are read and
    how image errors are reported, not about boxes."""
    from mmie_pipe.adapters.detectors import Detector, DetectorConfig, detectors

    if "stub_boxes" in detectors.names():
        return

    class StubConfig(DetectorConfig):
        kind: str = "stub_boxes"

    @detectors.register("stub_boxes")
    class StubDetector(Detector):
        kind = "stub_boxes"
        Config = StubConfig

        def identity(self):
            return {"name": "stub"}

        def load(self):
            pass

        def detect(self, image):
            return []
