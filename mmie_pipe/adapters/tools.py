"""What local image tools (object detectors, OCR engines, OFA) share: a typed config, a lock, an
identity that enters cache keys, and loading once per run.

Tools are declared under a pipeline's `backends:` like models (so a profile can swap them) and the
runner starts and closes them like backends; stages reach them through `mmie_pipe.tool_calls`,
which puts every call on the one read-through cache path.
"""

from __future__ import annotations

import asyncio
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
    # What a stage may ask of it: "detect" (boxes, optionally for text queries), "ocr",
    # "entail" / "ground" (OFA). `validate` checks them against the roles a stage binds it to.
    base_capabilities: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def capabilities_of(cls, config: ToolConfig) -> frozenset[str]:
        return cls.base_capabilities

    @property
    def capabilities(self) -> frozenset[str]:
        return self.capabilities_of(self.config)

    def __init__(self, config: ToolConfig):
        self.config = config
        self._lock = threading.Lock()  # models are shared by the stage's worker threads

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What decides the outputs (model file hashes, settings): part of the cache key."""

    @abstractmethod
    def load(self) -> None:
        """Load the model once; called by the stage's setup."""

    # The backend life cycle, so the runner can start a tool declared under `backends:`.
    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    async def close(self) -> None:
        """Nothing to release: weights are freed with the tool."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "identity": self.identity()}
