"""A scripted in-process backend for fast unit tests of stage logic (never a stand-in for a real
model in integration tests, benchmarks or docs)."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Callable, Literal

from ..model_io import ModelRequest, ModelResponse, TokenLogprob, Usage
from ..registry import backends
from .base import Backend, BackendConfig


class FakeConfig(BackendConfig):
    kind: Literal["fake"] = "fake"
    model: str = "fake"
    reply: str = ""  # returned for every request unless a responder is set in code
    delay_s: float = 0.0


@backends.register("fake")
class FakeBackend(Backend):
    kind = "fake"
    Config = FakeConfig
    base_capabilities = frozenset({"chat", "completion", "images", "json_schema", "choices", "choice_probs", "logprobs", "lora"})

    def __init__(self, config: FakeConfig, responder: Callable[[ModelRequest], str | dict[str, float]] | None = None):
        super().__init__(config)
        self.config: FakeConfig = config
        self.responder = responder
        self.requests: list[ModelRequest] = []
        self.peak_in_flight = 0
        self._in_flight = 0

    def identity(self) -> dict[str, Any]:
        return {"name": self.config.model}

    async def _generate(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            if self.config.delay_s:
                await asyncio.sleep(self.config.delay_s)
            text = self.responder(request) if self.responder else self.config.reply
        finally:
            self._in_flight -= 1
        logprobs = None
        if isinstance(text, dict):  # a responder may give a first-token distribution {token: prob}
            top = {token: math.log(p) for token, p in text.items() if p > 0}
            text = max(text, key=text.get)
            logprobs = [TokenLogprob(token=text, logprob=top[text], top=top)]
        elif request.top_logprobs and text:
            logprobs = [TokenLogprob(token=text, logprob=0.0, top={text: 0.0})]
        return ModelResponse(text=text, finish_reason="stop", logprobs=logprobs,
                             usage=Usage(prompt_tokens=10, completion_tokens=len(text.split())))
