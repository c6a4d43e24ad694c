"""What local image tools (object detectors, OCR engines) share: a typed config, a lock, an
identity that enters cache keys, and loading once per run."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ToolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str


class LocalTool(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[ToolConfig]]

    def __init__(self, config: ToolConfig):
        self.config = config
        self._lock = threading.Lock()  # models are shared by the stage's worker threads

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What decides the outputs (model file hashes, settings): part of the cache key."""

    @abstractmethod
    def load(self) -> None:
        """Load the model once; called by the stage's setup."""
