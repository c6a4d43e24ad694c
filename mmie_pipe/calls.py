"""The one way stages call models: request -> cache -> backend -> parse (re-ask) -> typed answer.

A stage gets a `ModelClient` bound to its name and version and never sees the backend. Hits make no
model call and count zero tokens, so re-running a finished run is free and an interrupted run
replays its finished calls from the cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

from pydantic import BaseModel, ValidationError

from .adapters.base import Backend
from .cache import GenerationCache, cache_key
from .errors import MmieError, ParseError
from .model_io import Constraint, Message, ModelRequest, ModelResponse, Usage

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class CallStats:
    """Counters shared by every client of a run (read by the progress bar and the manifest)."""

    calls: int = 0
    cache_hits: int = 0
    shared: int = 0  # identical requests answered by one call already in flight
    reasks: int = 0
    usage: Usage = field(default_factory=Usage)
    # Events stages report for the run summary (e.g. MQA's `choice_fallbacks`).
    events: dict[str, int] = field(default_factory=dict)
    # Per model name: tokens spent on calls made, and tokens the cache hits had cost when they were
    # made (together: what a fresh run pays). Read by cost estimates (`pricing`) and `bench`.
    spent_by_model: dict[str, Usage] = field(default_factory=dict)
    cached_by_model: dict[str, Usage] = field(default_factory=dict)

    def count(self, event: str, n: int = 1) -> None:
        self.events[event] = self.events.get(event, 0) + n

    def add_usage(self, model: str, usage: Usage, *, cached: bool) -> None:
        book = self.cached_by_model if cached else self.spent_by_model
        book[model] = book.get(model, Usage()) + usage

    def as_dict(self) -> dict[str, Any]:
        models = sorted(set(self.spent_by_model) | set(self.cached_by_model))
        return {
            "model_calls": self.calls,
            "cache_hits": self.cache_hits,
            "shared_in_flight": self.shared,
            "reasks": self.reasks,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            **self.events,
            "tokens_by_model": {
                m: {
                    "prompt": self.spent_by_model.get(m, Usage()).prompt_tokens,
                    "completion": self.spent_by_model.get(m, Usage()).completion_tokens,
                    "cached_prompt": self.cached_by_model.get(m, Usage()).prompt_tokens,
                    "cached_completion": self.cached_by_model.get(m, Usage()).completion_tokens,
                }
                for m in models
            },
        }


@dataclass
class Answer(Generic[T]):
    value: T
    response: ModelResponse
    attempts: int = 1


@dataclass
class Outcome(Generic[T]):
    """One item of a fan-out: its value, or the error that item alone ran into."""

    value: T | None = None
    error: str | None = None
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def fan_out(items: Sequence[Awaitable[T]], *, lead: bool = False) -> list[Outcome[T]]:
    """Run one record's per-item work (a question per span, entity or pair) concurrently and return
    a result or an error per item, in order. Concurrency is bounded by the backends, not here; a
    failed item never cancels the others, and the stage decides what an item's error means.

    `lead=True` awaits the first item before starting the rest. Items that share a long prompt
    prefix then find it in the server's prompt cache instead of each computing it in its own slot
    at the same moment; it costs one round trip of latency per record, not throughput, while other
    records keep the slots busy."""

    async def one(item: Awaitable[T]) -> Outcome[T]:
        try:
            return Outcome(value=await item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on its item
            text = str(exc) or type(exc).__name__
            return Outcome(error=text if isinstance(exc, MmieError) else f"{type(exc).__name__}: {text}", exception=exc)

    if lead and len(items) > 1:
        first = await one(items[0])
        return [first, *await asyncio.gather(*(one(item) for item in items[1:]))]
    return list(await asyncio.gather(*(one(item) for item in items)))


async def through_cache(
    cache: GenerationCache | None,
    key: str,
    stage: str,
    stats: CallStats | None,
    compute: Callable[[], Awaitable[dict[str, Any]]],
    check: Callable[[dict[str, Any]], Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """The one read-through path into the generation cache, for model calls and local tools alike:
    a hit is counted and computes nothing; a miss is counted, computed and stored. A stored value
    that `check` rejects is a damaged entry: it is recomputed and overwritten. Returns
    (value, hit). SQLite runs off the event loop."""
    hit = await cache.aget(key) if cache is not None else None
    if hit is not None and check is not None:
        try:
            check(hit)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("cache entry %s for %s is damaged (%s); recomputing it", key[:12], stage, _brief(exc))
            hit = None
    if hit is not None:
        if stats is not None:
            stats.cache_hits += 1
        return hit, True
    if stats is not None:
        stats.calls += 1
    value = await compute()
    if cache is not None:
        await cache.aput(key, stage, value)
    return value, False


class ModelClient:
    def __init__(
        self,
        backend: Backend,
        cache: GenerationCache,
        *,
        stage: str,
        stage_version: int | str,
        stats: CallStats | None = None,
    ):
        self.backend = backend
        self.cache = cache
        self.stage = stage
        self.stage_version = stage_version
        self.stats = stats or CallStats()
        # Identical requests in flight share one backend call (a fan-out often repeats a question).
        self._in_flight: dict[str, asyncio.Future[ModelResponse]] = {}
        self._model_name: str | None = None

    @property
    def model_name(self) -> str:
        if self._model_name is None:  # identity() may hash a weights file: once per client
            self._model_name = str(self.backend.identity().get("name") or self.backend.kind)
        return self._model_name

    def key(self, request: ModelRequest) -> str:
        return cache_key(
            backend_kind=self.backend.kind,
            model_identity=self.backend.identity(),
            request=request,
            stage=self.stage,
            stage_version=self.stage_version,
        )

    async def generate(self, request: ModelRequest) -> ModelResponse:
        self.backend.check(request)
        key = self.key(request)
        pending = self._in_flight.get(key)
        if pending is not None:
            self.stats.shared += 1
            response = await asyncio.shield(pending)
            return response.model_copy(update={"cached": True, "usage": Usage()})
        future: asyncio.Future[ModelResponse] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            response = await self._generate_once(request, key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a future nobody else awaits logs no warning
            raise
        else:
            future.set_result(response)
            return response
        finally:
            del self._in_flight[key]

    async def choose(self, request: ModelRequest, options: Sequence[str]) -> ModelResponse:
        """A multiple-choice question: `text` is the most probable option and `choice.probs` the
        distribution over `options` (see `mmie_pipe.choices`). The request is the prompt that
        ends where the answer goes; options are best single letters (`choices.letters`)."""
        from .choices import check_options

        check_options(options)
        scored = request.model_copy(
            update={"constraint": Constraint(choices=tuple(options)), "score_choices": True}
        )
        return await self.generate(scored)

    async def _generate_once(self, request: ModelRequest, key: str) -> ModelResponse:
        fresh: ModelResponse | None = None

        async def call() -> dict[str, Any]:
            nonlocal fresh
            fresh = await self.backend.generate(request)
            choices = request.constraint.choices if request.constraint else None
            if choices and fresh.text not in choices and fresh.text.strip() in choices:
                # Tokenizers may decode the chosen option with a leading space.
                fresh = fresh.model_copy(update={"text": fresh.text.strip()})
            self.stats.usage = self.stats.usage + fresh.usage
            self.stats.add_usage(self.model_name, fresh.usage, cached=False)
            return fresh.model_dump(mode="json", exclude={"cached"})

        value, hit = await through_cache(
            self.cache, key, self.stage, self.stats, call, check=ModelResponse.model_validate
        )
        if not hit:
            return fresh
        response = ModelResponse.model_validate(value)
        self.stats.add_usage(self.model_name, response.usage, cached=True)
        return response.model_copy(update={"cached": True, "usage": Usage()})

    async def ask(
        self,
        request: ModelRequest,
        parse: Callable[[str], T],
        *,
        max_reasks: int = 1,
    ) -> Answer[T]:
        """Generate and parse. On a parse error, chat requests are re-asked with the error shown to
        the model (bounded); the final error carries every attempt's text."""
        attempts: list[str] = []
        current = request
        for attempt in range(max_reasks + 1):
            response = await self.generate(current)
            try:
                return Answer(parse(response.text), response, attempt + 1)
            except (ValueError, ValidationError) as exc:
                attempts.append(response.text)
                if current.messages is None or attempt == max_reasks:
                    break
                self.stats.reasks += 1
                current = current.model_copy(
                    update={
                        "messages": current.messages
                        + (
                            Message(role="assistant", content=response.text),
                            Message(role="user", content=f"That answer could not be used: {_brief(exc)}. Answer again, following the required format exactly."),
                        )
                    }
                )
        shown = " | ".join(repr(a[:120]) for a in attempts)
        raise ParseError(f"model answer could not be parsed after {len(attempts)} attempt(s): {shown}")


def _brief(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def json_parser(model: type[BaseModel]) -> Callable[[str], BaseModel]:
    """Parse the first JSON object in the text into `model` (servers may wrap it in prose)."""

    def parse(text: str) -> BaseModel:
        match = _JSON_OBJECT.search(text)
        if not match:
            raise ValueError("no JSON object in the answer")
        return model.model_validate(json.loads(match.group(0)))

    return parse
