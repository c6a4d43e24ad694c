"""Any OpenAI-compatible server: vLLM's `vllm serve`, llama.cpp's `llama-server`, the OpenAI API.

Retries (tenacity: exponential backoff with jitter, honouring Retry-After) happen only on transient
failures: 429, 5xx, timeouts and connection errors. A 400-class request error is final.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Literal

from pydantic import Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..errors import ModelCallError
from ..model_io import ImagePart, Message, ModelRequest, ModelResponse, TokenLogprob, Usage
from ..registry import backends
from .base import Backend, BackendConfig

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60.0


class OpenAIConfig(BackendConfig):
    kind: Literal["openai"] = "openai"
    model: str
    base_url: str | None = None  # None: the OpenAI API
    # Several replicas of the same model (one per GPU): each request goes to the least busy one.
    base_urls: list[str] = Field(default_factory=list)
    # Name of the environment variable holding the key; the key itself never enters config files.
    api_key_env: str = "OPENAI_API_KEY"
    revision: str | None = None  # part of the model identity (e.g. a served checkpoint's hash)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    retry_max_wait_s: float = Field(default=20.0, gt=0)
    # How the server spells structured outputs beyond `response_format` (choices, grammars).
    flavor: Literal["openai", "vllm", "llamacpp"] = "openai"
    supports_images: bool = True
    supports_json_schema: bool = True


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    status = _status(exc)
    return status is not None and (status == 429 or status >= 500)


def retry_after_seconds(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    value = headers.get("retry-after")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None  # an HTTP date; fall back to backoff


class _BackoffHonouringRetryAfter:
    def __init__(self, max_wait: float):
        self._backoff = wait_random_exponential(multiplier=0.5, max=max_wait)

    def __call__(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_seconds(exc) if exc else None
        return after if after is not None else self._backoff(state)


def _message_payload(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": message.role, "content": message.content}
    parts = []
    for part in message.content:
        if isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": part.data_url()}})
        else:
            parts.append({"type": "text", "text": part.text})
    return {"role": message.role, "content": parts}


def _choice_grammar(choices: tuple[str, ...]) -> str:
    alternatives = " | ".join(json.dumps(c) for c in choices)
    return f"root ::= {alternatives}"


@backends.register("openai")
class OpenAIBackend(Backend):
    kind = "openai"
    Config = OpenAIConfig

    def __init__(self, config: OpenAIConfig):
        super().__init__(config)
        self.config: OpenAIConfig = config
        self._clients: dict[str | None, Any] = {}
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._busy: dict[str | None, int] = {}
        self._turn = 0
        self.served: dict[str, Any] | None = None

    @classmethod
    def capabilities_of(cls, config: OpenAIConfig) -> frozenset[str]:  # type: ignore[override]
        caps = {"chat", "completion", "choices", "choice_probs", "logprobs"}
        if config.supports_images:
            caps.add("images")
        if config.supports_json_schema:
            caps.add("json_schema")
        if config.flavor == "vllm":
            caps.add("lora")  # vLLM serves LoRA adapters as extra model names
        return frozenset(caps)

    def identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"name": self.config.model, "revision": self.config.revision}
        if self.served:
            identity["served"] = self.served
        return identity

    async def start(self) -> None:
        self.served = await self._served_identity()

    async def _served_identity(self) -> dict[str, Any] | None:
        """What the server says it serves (vLLM: each model's `root`, LoRA adapters with their
        parent; llama.cpp: the GGUF path from /props), so a cache entry names the weights, not only
        the name typed in the config. A name the server does not serve is refused here, before any
        record runs. Unreachable or unauthorised listings are skipped: the first call will say why."""
        import httpx

        from ..errors import ConfigError
        from ..files import dir_sha256

        base = (self.endpoints()[0] or "https://api.openai.com/v1").rstrip("/")
        key = os.environ.get(self.config.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                listing = await http.get(f"{base}/models", headers=headers)
                props = await http.get(f"{base.removesuffix('/v1')}/props") if self.config.flavor == "llamacpp" else None
        except httpx.HTTPError:
            return None
        served: dict[str, Any] = {}
        if props is not None and props.status_code == 200:
            model_path = str(props.json().get("model_path") or "")
            served["model_file"] = os.path.basename(model_path)
            return served  # llama.cpp serves one model whatever name a request carries
        if listing.status_code != 200:
            return None
        models = {m.get("id"): m for m in listing.json().get("data", []) if isinstance(m, dict)}
        if self.config.model not in models:
            raise ConfigError(
                f"the server serves {', '.join(sorted(map(str, models))) or 'no model'}, not {self.config.model!r}; "
                "fix `model` (vLLM: the name given to `vllm serve` or --served-model-name)"
            )
        base_model = models[self.config.model]
        if base_model.get("root") and base_model.get("root") != self.config.model:
            served["root"] = base_model["root"]
        adapters = {
            mid: dir_sha256(m["root"]) or m["root"]
            for mid, m in models.items()
            if m.get("parent") == self.config.model and m.get("root")
        }
        if adapters:
            served["adapters"] = adapters
        return served or None

    @property
    def base_url(self) -> str | None:
        return self.config.base_url

    def endpoints(self) -> list[str | None]:
        return list(self.config.base_urls) or [self.base_url]

    def client(self, base_url: str | None = None):
        # An async client belongs to the event loop that made it; a new loop (a new run) gets its own.
        loop = asyncio.get_running_loop()
        if self._client_loop is not loop:
            self._clients, self._client_loop = {}, loop
        url = base_url or self.base_url
        if url not in self._clients:
            import openai

            # Local servers ignore the key, but the client insists on one.
            key = os.environ.get(self.config.api_key_env) or "unused"
            self._clients[url] = openai.AsyncOpenAI(base_url=url, api_key=key, timeout=self.config.timeout_s, max_retries=0)
        return self._clients[url]

    def _least_busy(self) -> str | None:
        """The endpoint with the fewest requests in flight; ties rotate, so equal replicas share evenly."""
        urls = self.endpoints()
        self._turn = (self._turn + 1) % len(urls)
        rotated = urls[self._turn:] + urls[: self._turn]
        return min(rotated, key=lambda u: self._busy.get(u, 0))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients = {}

    def _structured_kwargs(self, request: ModelRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        """(top-level kwargs, extra_body) for the request's constraint in this server's dialect."""
        constraint = request.constraint
        if constraint is None:
            return {}, {}
        if constraint.json_schema is not None:
            fmt = {"type": "json_schema", "json_schema": {"name": constraint.schema_name, "schema": constraint.json_schema}}
            if request.messages is not None:
                return {"response_format": fmt}, {}
            # Completions have no response_format; both servers accept a schema in the body.
            if self.config.flavor == "vllm":
                return {}, {"structured_outputs": {"json": constraint.json_schema}}
            return {}, {"json_schema": constraint.json_schema}
        choices = list(constraint.choices or ())
        if self.config.flavor == "vllm":
            return {}, {"structured_outputs": {"choice": choices}}
        if self.config.flavor == "llamacpp":
            return {}, {"grammar": _choice_grammar(constraint.choices or ())}
        # The OpenAI API has no choice constraint: a one-field enum schema, unwrapped on return.
        schema = {
            "type": "object",
            "properties": {"answer": {"type": "string", "enum": choices}},
            "required": ["answer"],
            "additionalProperties": False,
        }
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "choice", "schema": schema, "strict": True}}}, {}

    async def _call(self, request: ModelRequest) -> ModelResponse:
        s = request.sampling
        common: dict[str, Any] = {
            "model": request.lora if request.lora and self.config.flavor == "vllm" else self.config.model,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "top_p": s.top_p,
        }
        if s.stop:
            common["stop"] = list(s.stop)
        if s.seed is not None:
            common["seed"] = s.seed + request.sample_index
        kwargs, extra_body = self._structured_kwargs(request)
        if extra_body:
            kwargs["extra_body"] = extra_body
        url = self._least_busy()
        self._busy[url] = self._busy.get(url, 0) + 1
        try:
            return await self._call_endpoint(self.client(url), request, common, kwargs)
        finally:
            self._busy[url] -= 1

    async def _call_endpoint(
        self, client: Any, request: ModelRequest, common: dict[str, Any], kwargs: dict[str, Any]
    ) -> ModelResponse:
        if request.messages is not None:
            if request.top_logprobs:
                kwargs.update(logprobs=True, top_logprobs=request.top_logprobs)
            resp = await client.chat.completions.create(
                messages=[_message_payload(m) for m in request.messages], **common, **kwargs
            )
            choice = resp.choices[0]
            text = choice.message.content or ""
            logprobs = _chat_logprobs(choice)
        else:
            if request.top_logprobs:
                kwargs["logprobs"] = request.top_logprobs
            resp = await client.completions.create(prompt=request.prompt, **common, **kwargs)
            choice = resp.choices[0]
            text = choice.text or ""
            logprobs = _completion_logprobs(choice)
        if request.constraint is not None and request.constraint.choices and "response_format" in kwargs:
            text = json.loads(text)["answer"]
        usage = Usage(
            prompt_tokens=getattr(resp.usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(resp.usage, "completion_tokens", 0) or 0,
        )
        return ModelResponse(text=text, finish_reason=choice.finish_reason, logprobs=logprobs, usage=usage)

    async def _generate(self, request: ModelRequest) -> ModelResponse:
        if request.prompt is not None and request.choices and self.config.flavor == "openai":
            # The OpenAI API constrains no completion: answer by the most probable option's first token.
            return await self._score_choices(request.model_copy(update={"score_choices": True}))
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.config.max_retries + 1),
                wait=_BackoffHonouringRetryAfter(self.config.retry_max_wait_s),
                retry=retry_if_exception(is_transient),
                reraise=True,
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return await self._call(request)
        except Exception as exc:  # noqa: BLE001 - turned into one typed error for the caller
            import openai

            if not isinstance(exc, openai.OpenAIError):
                raise
            status = _status(exc)
            what = f"HTTP {status}" if status else type(exc).__name__
            raise ModelCallError(
                f"{what} from model server after {attempts} attempt(s): {_short(exc)}",
                attempts=attempts,
                status=status,
            ) from exc
        raise AssertionError("unreachable")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _chat_logprobs(choice: Any) -> list[TokenLogprob] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [
        TokenLogprob(token=t.token, logprob=t.logprob, top={x.token: x.logprob for x in (t.top_logprobs or [])})
        for t in content
    ]


def _completion_logprobs(choice: Any) -> list[TokenLogprob] | None:
    lp = getattr(choice, "logprobs", None)
    if not lp:
        return None
    content = getattr(lp, "content", None)
    if content:  # llama.cpp answers completions in the chat-style per-token form
        return [
            TokenLogprob(
                token=t["token"], logprob=t["logprob"], top={x["token"]: x["logprob"] for x in t.get("top_logprobs") or []}
            )
            for t in content
        ]
    if not getattr(lp, "tokens", None):
        return None
    tops = lp.top_logprobs or [None] * len(lp.tokens)
    return [
        TokenLogprob(token=tok, logprob=logprob or 0.0, top=dict(top or {}))
        for tok, logprob, top in zip(lp.tokens, lp.token_logprobs, tops)
    ]
