"""Local weights through transformers: a directory or the local HF cache, CPU or GPU.

Text LLMs with chat templates, peft (LoRA) adapters by name, optional 4-bit loading through
bitsandbytes on GPU. Choice constraints are answered by scoring each option's log-likelihood,
which is exact rather than sampled. Generation runs in a worker thread, one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Literal

from pydantic import Field

from ..errors import MissingDependency, ModelCallError
from ..files import dir_sha256
from ..model_io import ModelRequest, ModelResponse, TokenLogprob, Usage
from ..registry import backends
from .base import Backend, BackendConfig

log = logging.getLogger(__name__)


class TransformersConfig(BackendConfig):
    kind: Literal["transformers"] = "transformers"
    model: str  # local directory, or a name already in the local HF cache
    revision: str | None = None
    # Model family: text LLMs use `causal_lm`; image-text models are listed in `VISION_FAMILIES`.
    family: str = "causal_lm"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    load_in_4bit: bool = False  # bitsandbytes, GPU only
    lora_modules: dict[str, str] = Field(default_factory=dict)
    local_files_only: bool = True  # never reach a hub at run time unless asked
    trust_remote_code: bool = False
    concurrency: int = Field(default=1, ge=1)


def _import_torch_transformers():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependency("transformers", "transformers", "the transformers backend") from exc
    return torch, transformers


@backends.register("transformers")
class TransformersBackend(Backend):
    kind = "transformers"
    Config = TransformersConfig

    def __init__(self, config: TransformersConfig):
        super().__init__(config)
        self.config: TransformersConfig = config
        self.model = None
        self.tokenizer = None
        self.processor = None
        self._lock = threading.Lock()

    @classmethod
    def capabilities_of(cls, config: TransformersConfig) -> frozenset[str]:  # type: ignore[override]
        caps = {"chat", "completion", "choices", "choice_probs", "logprobs", "lora"}
        if config.family != "causal_lm":
            caps.add("images")
        return frozenset(caps)

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.config.model,
            "revision": self.config.revision or dir_sha256(self.config.model),
            "family": self.config.family,
            "adapters": {n: dir_sha256(p) or p for n, p in sorted(self.config.lora_modules.items())},
            "4bit": self.config.load_in_4bit,
        }

    def _device(self, torch: Any) -> str:
        if self.config.device != "auto":
            return self.config.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _load_kwargs(self, torch: Any) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = {
            "revision": c.revision, "local_files_only": c.local_files_only, "trust_remote_code": c.trust_remote_code,
        }
        if c.dtype != "auto":
            kwargs["dtype"] = getattr(torch, c.dtype)
        if c.load_in_4bit:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as exc:
                raise MissingDependency("bitsandbytes", "quant", "4-bit loading") from exc
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float16)
            kwargs["device_map"] = "auto"
        return kwargs

    def load(self) -> None:
        torch, transformers = _import_torch_transformers()
        c = self.config
        kwargs = self._load_kwargs(torch)
        if c.family == "causal_lm":
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(c.model, revision=c.revision, local_files_only=c.local_files_only)
            model = transformers.AutoModelForCausalLM.from_pretrained(c.model, **kwargs)
        else:
            from .transformers_vision import load_vision_model

            model, self.processor = load_vision_model(c.family, c.model, kwargs)
            self.tokenizer = getattr(self.processor, "tokenizer", None)
        if c.lora_modules:
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise MissingDependency("peft", "transformers", "LoRA adapters") from exc
            names = sorted(c.lora_modules)
            model = PeftModel.from_pretrained(model, c.lora_modules[names[0]], adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(c.lora_modules[name], adapter_name=name)
        if not c.load_in_4bit:
            model = model.to(self._device(torch))
        model.eval()
        self.model = model
        for name in sorted(c.lora_modules):
            self._check_adapter_changes_outputs(name)

    def _check_adapter_changes_outputs(self, name: str) -> None:
        """Refuse an adapter that leaves the model's next-token scores unchanged (an untrained,
        zero-initialised or mis-targeted adapter would otherwise silently serve the base model)."""
        import torch

        ids = self.tokenizer("A short probe sentence about Paris.", return_tensors="pt")["input_ids"].to(self.model.device)
        try:
            with torch.no_grad():
                self.model.set_adapter(name)
                tuned = self.model(input_ids=ids).logits[0, -1].float()
                with self.model.disable_adapter():
                    base = self.model(input_ids=ids).logits[0, -1].float()
        except (TypeError, ValueError) as exc:  # e.g. encoder-decoder models need decoder inputs
            log.warning("could not check that LoRA adapter %r changes outputs: %s", name, exc)
            return
        if torch.allclose(tuned, base, atol=1e-6, rtol=0):
            raise ModelCallError(
                f"LoRA adapter {name!r} ({self.config.lora_modules[name]}) does not change the model's outputs: "
                "it is untrained, zero-initialised or targets modules this model does not use"
            )

    async def start(self) -> None:
        if self.model is None:
            await asyncio.to_thread(self.load)

    async def close(self) -> None:
        self.model = None

    # -- generation ------------------------------------------------------------------------------
    def _prompt_text(self, request: ModelRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        messages = [
            {"role": m.role, "content": m.content if isinstance(m.content, str) else " ".join(p.text for p in m.content if p.type == "text")}
            for m in request.messages or ()
        ]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def encode(self, request: ModelRequest) -> Any:
        """The model inputs of a request, on the model's device: what generation and choice scoring
        read, and what LoRA training appends its answer tokens to."""
        if request.images:
            from .transformers_vision import vision_inputs

            inputs = vision_inputs(self, request)
        else:
            inputs = self.tokenizer(self._prompt_text(request), return_tensors="pt")
        return inputs.to(self.model.device)

    def _select_adapter(self, request: ModelRequest):
        from contextlib import nullcontext

        if not self.config.lora_modules:
            if request.lora:
                raise ModelCallError(f"LoRA adapter {request.lora!r} requested but none configured")
            return nullcontext()
        if request.lora:
            if request.lora not in self.config.lora_modules:
                raise ModelCallError(f"unknown LoRA adapter {request.lora!r}; configured: {sorted(self.config.lora_modules)}")
            self.model.set_adapter(request.lora)
            return nullcontext()
        return self.model.disable_adapter()  # the base model, as the request asked for no adapter

    def _generate_sync(self, request: ModelRequest) -> ModelResponse:
        torch, _ = _import_torch_transformers()
        with self._lock, torch.no_grad(), self._select_adapter(request):
            inputs = self.encode(request)
            prompt_len = inputs["input_ids"].shape[-1]
            if request.constraint is not None and request.constraint.choices:
                return self._choose(inputs, request, prompt_len)
            s = request.sampling
            gen_kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens, "do_sample": s.temperature > 0}
            if s.temperature > 0:
                gen_kwargs.update(temperature=s.temperature, top_p=s.top_p)
                if s.seed is not None:
                    torch.manual_seed(s.seed + request.sample_index)
            if request.top_logprobs:
                gen_kwargs.update(output_scores=True, return_dict_in_generate=True)
            if s.stop:
                gen_kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
            pad = getattr(self.tokenizer, "pad_token_id", None) or getattr(self.tokenizer, "eos_token_id", None)
            out = self.model.generate(**inputs, pad_token_id=pad, **gen_kwargs)
            sequences = out.sequences if request.top_logprobs else out
            new_tokens = sequences[0][self._answer_start(prompt_len):]
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            for stop in s.stop:  # stop strings are excluded from the answer, as servers do
                if stop in text:
                    text = text[: text.index(stop)]
            logprobs = self._logprobs(out.scores, new_tokens, request.top_logprobs) if request.top_logprobs else None
            finish = "length" if len(new_tokens) >= s.max_tokens else "stop"
            return ModelResponse(text=text, finish_reason=finish, logprobs=logprobs,
                                 usage=Usage(prompt_tokens=prompt_len, completion_tokens=len(new_tokens)))

    def _answer_start(self, prompt_len: int) -> int:
        """Where the answer starts in `generate`'s output: after the echoed prompt, or (encoder-decoder
        vision models such as BLIP-2 with Flan-T5) after the decoder start token."""
        if self.config.family == "causal_lm":
            return prompt_len
        from .transformers_vision import output_echoes_prompt

        return prompt_len if output_echoes_prompt(self.model) else 1

    def _logprobs(self, scores: Any, tokens: Any, k: int) -> list[TokenLogprob]:
        out = []
        for step, token_id in zip(scores, tokens):
            logp = step[0].float().log_softmax(-1)
            top = logp.topk(min(k, logp.shape[-1]))  # a vocabulary may be smaller than k
            out.append(TokenLogprob(
                token=self.tokenizer.decode([int(token_id)]), logprob=float(logp[int(token_id)]),
                top={self.tokenizer.decode([int(i)]): float(v) for v, i in zip(top.values, top.indices)},
            ))
        return out

    def _choose(self, inputs: Any, request: ModelRequest, prompt_len: int) -> ModelResponse:
        """Score every option's total log-likelihood in ONE batched forward pass (prompt + option,
        right-padded), and answer with the most likely option: exact, not sampled."""
        import torch

        from ..choices import scores_from_likelihoods

        options = list(request.choices)
        option_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        if any(not ids for ids in option_ids):
            raise ModelCallError(f"an option tokenizes to nothing: {options}")
        longest = max(len(ids) for ids in option_ids)
        pad = getattr(self.tokenizer, "pad_token_id", None) or getattr(self.tokenizer, "eos_token_id", None) or 0
        n = len(options)
        device = self.model.device
        prompt = inputs["input_ids"][0]
        batch = torch.full((n, prompt_len + longest), pad, dtype=prompt.dtype, device=device)
        mask = torch.zeros_like(batch)
        for row, ids in enumerate(option_ids):
            batch[row, :prompt_len] = prompt
            batch[row, prompt_len : prompt_len + len(ids)] = torch.tensor(ids, dtype=prompt.dtype, device=device)
            mask[row, : prompt_len + len(ids)] = 1
        extra = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in inputs.items()
                 if k not in ("input_ids", "attention_mask") and hasattr(v, "repeat")}
        # Only the positions that predict option tokens are needed: keep those logits alone.
        keep = longest + 1
        try:
            logits = self.model(input_ids=batch, attention_mask=mask, logits_to_keep=keep, **extra).logits
        except TypeError:  # older model classes without `logits_to_keep`
            logits = self.model(input_ids=batch, attention_mask=mask, **extra).logits[:, -keep:]
        logp = logits[:, :-1].float().log_softmax(-1)  # position j predicts option token j
        totals = []
        for row, ids in enumerate(option_ids):
            target = torch.tensor(ids, device=device).unsqueeze(-1)
            totals.append(float(logp[row, : len(ids)].gather(-1, target).sum()))
        scores = scores_from_likelihoods(totals, options)
        best = scores.best
        return ModelResponse(
            text=best, finish_reason="stop", choice=scores if request.score_choices else None,
            logprobs=[TokenLogprob(token=best, logprob=totals[options.index(best)], top=dict(zip(options, totals)))],
            usage=Usage(prompt_tokens=prompt_len, completion_tokens=0),
        )

    async def _score_choices(self, request: ModelRequest) -> ModelResponse:
        return await self._generate(request)  # `_choose` scores every option exactly

    async def _generate(self, request: ModelRequest) -> ModelResponse:
        if self.model is None:
            await self.start()
        try:
            return await asyncio.to_thread(self._generate_sync, request)
        except ModelCallError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise ModelCallError(f"transformers generation failed: {exc}") from exc
