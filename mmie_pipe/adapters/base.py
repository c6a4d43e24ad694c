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

# What a request may need; a backend lists what it supports, a stage's roles list what they need,
# and `validate` checks one against the other before anything loads. `choice_probs`: a probability
# for every option of a choice request (ModelResponse.choice).
CAPABILITIES = frozenset({"chat", "completion", "images", "json_schema", "choices", "choice_probs", "logprobs", "lora",
                          # local image tools declared as backends (adapters.tools)
                          "detect", "ocr", "entail", "ground"})


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    # Requests in flight at once. Servers with parallel slots / continuous batching need several.
    concurrency: int = Field(default=8, ge=1, le=1024)
    # Alternatives read at the first token of a scored choice. 20 is the OpenAI API's and vLLM's
    # default limit; raise it with the server's limit (vLLM `--max-logprobs`) for long label lists.
    choice_top_logprobs: int = Field(default=20, ge=1, le=1000)


class Backend(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    base_capabilities: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def capabilities_of(cls, config: BackendConfig) -> frozenset[str]:
        """What a backend with this config can do, known before anything loads (for `validate`)."""
        return cls.base_capabilities

    @property
    def capabilities(self) -> frozenset[str]:
        return self.capabilities_of(self.config)

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
        if request.score_choices:
            needs.add("choice_probs")
        if request.top_logprobs:
            needs.add("logprobs")
        if request.lora:
            needs.add("lora")
        missing = needs - self.capabilities
        if missing:
            raise ValueError(f"backend {self.kind!r} cannot do {', '.join(sorted(missing))}")

    def _semaphore(self) -> asyncio.Semaphore:
        # A semaphore belongs to the event loop that first waits on it; a backend reused in a new
        # loop (another `asyncio.run`, e.g. the next bench cell) gets a fresh one.
        return self._slots.get()

    async def generate(self, request: ModelRequest) -> ModelResponse:
        """Run one request, at most `concurrency` at a time."""
        async with self._semaphore():
            if request.score_choices:
                return await self._score_choices(request)
            return await self._generate(request)

    async def _score_choices(self, request: ModelRequest) -> ModelResponse:
        """Probabilities of every option from ONE generated token's top log-probabilities (servers,
        the vLLM engine); backends that can score options exactly override this."""
        from ..choices import first_token_request, scores_from_top_logprobs
        from ..errors import ParseError

        options = request.choices
        raw = await self._generate(first_token_request(request, self.config.choice_top_logprobs))
        if not raw.logprobs:
            raise ParseError(f"backend {self.kind!r} returned no log-probabilities for a choice request")
        first = raw.logprobs[0]
        top = dict(first.top) or {first.token: first.logprob}
        top.setdefault(first.token, first.logprob)
        scores = scores_from_top_logprobs(top, options)
        return raw.model_copy(update={"text": scores.best, "choice": scores, "logprobs": raw.logprobs[:1]})

    @abstractmethod
    async def _generate(self, request: ModelRequest) -> ModelResponse: ...
