"""The contract every model backend meets.

Backends differ only in how they execute a request and what they can do; caching, parsing,
re-asking and accounting happen once, in `mmie_pipe.calls`, for all of them.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..loop_local import LoopLocal
from ..model_io import ModelRequest, ModelResponse

# What a request may need; a backend lists what it supports so a stage fails early and clearly.
CAPABILITIES = ("chat", "completion", "images", "json_schema", "choices", "logprobs", "lora")


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    # Requests in flight at once. Servers with parallel slots / continuous batching need several.
    concurrency: int = Field(default=8, ge=1, le=1024)


class Backend(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    capabilities: ClassVar[frozenset[str]]

    def __init__(self, config: BackendConfig):
        self.config = config
        self._slots: LoopLocal[asyncio.Semaphore] = LoopLocal(lambda: asyncio.Semaphore(self.config.concurrency))

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Model name plus revision or file hash, and adapter identities. Never secrets or URLs."""

    async def start(self) -> None:
        """Load weights or start a server. Called once before the first request."""

    async def close(self) -> None:
        """Release what `start` acquired."""

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about this backend (identity plus non-secret settings)."""
        return {"kind": self.kind, "identity": self.identity()}

    def check(self, request: ModelRequest) -> None:
        needs = {"chat" if request.messages is not None else "completion"}
        if request.images:
            needs.add("images")
        if request.constraint is not None:
            needs.add("json_schema" if request.constraint.json_schema is not None else "choices")
        if request.top_logprobs:
            needs.add("logprobs")
        if request.lora:
            needs.add("lora")
        missing = needs - self.capabilities
        if missing:
            raise ValueError(f"backend {self.kind!r} cannot do {', '.join(sorted(missing))}")

    async def generate(self, request: ModelRequest) -> ModelResponse:
        """Run one request, at most `concurrency` at a time."""
        async with self._slots.get():
            return await self._generate(request)

    @abstractmethod
    async def _generate(self, request: ModelRequest) -> ModelResponse: ...
