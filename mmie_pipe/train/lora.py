"""`mmie-pipe finetune reranker`: LoRA fine-tuning of a type reranker with peft.

The model loads through the `transformers` backend and each question is encoded by the backend's
own `encode` (chat template, image processor), then the gold letter's tokens are appended: the
loss covers those answer tokens only. Choice accuracy (the most probable option letter at the
answer position, the same first-token scoring the `rerank` stage reads) is measured on held-out
splits before and after training. The output folder holds `adapter/` (peft weights, plus
`reranker.json`: template, its hash, granularity, hierarchy, K), `last/` (resumable checkpoint)
and `manifest.json` (base model identity and hash, data, seed, settings, metrics, time, memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, MissingDependency
from ..reranking import TEMPLATE, question_request
from .rerank_data import ChoiceExample

log = logging.getLogger(__name__)

ADAPTER_DIR, LAST_DIR, MANIFEST = "adapter", "last", "manifest.json"
RERANKER_FILE = "reranker.json"
STATE_FILE = "trainer_state.pt"
# What LoRA adapts by default: attention and MLP projections of Llama-style language models. For a
# VLM only the language model's (what vLLM can serve); the vision tower and projector stay frozen.
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str
    family: str = "causal_lm"  # or a vision family of the transformers backend (llava, ...)
    granularity: Literal["coarse", "fine"] = "coarse"
    hierarchy: str = "fmnerg"
    top_k: int = Field(default=5, ge=2, le=26)
    context: Literal["auto", "image", "caption", "none"] = "auto"
    template: str = TEMPLATE
    rank: int = Field(default=64, ge=1)
    alpha: float = Field(default=128, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = None
    load_in_4bit: bool = False  # QLoRA (bitsandbytes), GPU only
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1)
    eval_batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    seed: int = 0
    checkpoint_steps: int | None = Field(default=None, ge=1)
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = Field(default=None, ge=1)

    def resolved_context(self) -> str:
        if self.context != "auto":
            return self.context
        return "caption" if self.family == "causal_lm" else "image"

    def targets(self) -> list[str] | str:
        if self.target_modules:
            return list(self.target_modules)
        if self.family == "causal_lm":
            return list(TEXT_TARGETS)
        return rf".*language_model.*\.({'|'.join(TEXT_TARGETS)})"  # peft: a regex matches full names


# Settings a resumed run may change without changing the result.
RESUMABLE_CHANGES = {"epochs", "max_steps", "checkpoint_steps", "device", "threads", "eval_batch_size"}


def template_hash(name: str) -> str:
    from ..prompts import template_source

    return hashlib.sha256(template_source(name).encode("utf-8")).hexdigest()


class ChoiceEncoder:
    """Questions -> token ids (+ pixels) through the backend, and the gold letter's ids."""

    def __init__(self, backend: Any, template: str):
        self.backend = backend
        self.template = template
        self.tokenizer = backend.tokenizer

    def letter_id(self, letter: str) -> int:
        return self.tokenizer(letter, add_special_tokens=False)["input_ids"][0]

    def prompt(self, example: ChoiceExample) -> dict[str, Any]:
        inputs = self.backend.encode(question_request(example.question, template=self.template))
        return {k: v.detach().cpu() for k, v in inputs.items()}

    def training_item(self, example: ChoiceExample) -> dict[str, Any]:
        import torch

        item = self.prompt(example)
        answer = torch.tensor([self.tokenizer(example.answer, add_special_tokens=False)["input_ids"]])
        prompt_len = item["input_ids"].shape[-1]
        item["input_ids"] = torch.cat([item["input_ids"], answer], dim=-1)
        item["attention_mask"] = torch.ones_like(item["input_ids"])
        labels = torch.full_like(item["input_ids"], -100)
        labels[0, prompt_len:] = answer[0]  # the loss reads the answer tokens only
        item["labels"] = labels
        return item


def collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded batch; pixel values (one image per question) are stacked."""
    import torch

    longest = max(i["input_ids"].shape[-1] for i in items)
    out: dict[str, Any] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        if key in items[0]:
            out[key] = torch.stack([
                torch.nn.functional.pad(i[key][0], (0, longest - i[key].shape[-1]), value=fill) for i in items
            ])
    for key in items[0]:
        if key not in out:
            out[key] = torch.cat([i[key] for i in items], dim=0)
    return out


def answer_loss(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    labels = batch.pop("labels")
    logits = model(**batch).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def choice_predictions(model: Any, encoder: ChoiceEncoder, examples: list[ChoiceExample], batch_size: int) -> list[dict[str, float]]:
    """Per question, the probabilities of its option letters at the answer position (renormalised
    over the options): the first-token choice scoring servers use."""
    import torch

    pad = encoder.tokenizer.pad_token_id or 0
    out: list[dict[str, float]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, len(examples), batch_size):
                chunk = examples[begin : begin + batch_size]
                items = [encoder.prompt(e) for e in chunk]
                lengths = [i["input_ids"].shape[-1] for i in items]
                batch = {k: v.to(_device_of(model)) for k, v in collate(items, pad).items()}
                logits = model(**batch).logits.float()
                for row, (example, length) in enumerate(zip(chunk, lengths)):
                    letters = example.question.letters
                    ids = torch.tensor([encoder.letter_id(x) for x in letters], device=logits.device)
                    probs = logits[row, length - 1].log_softmax(-1)[ids].softmax(-1).tolist()
                    out.append(dict(zip(letters, probs)))
    finally:
        model.train(was_training)
    return out


def accuracy(predictions: list[dict[str, float]], examples: list[ChoiceExample]) -> float:
    if not examples:
        return float("nan")
    right = sum(max(p, key=p.__getitem__) == e.answer for p, e in zip(predictions, examples))
    return right / len(examples)


def _device_of(model: Any) -> Any:
    return next(p for p in model.parameters()).device


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def peak_memory() -> dict[str, float]:
    from .trainer import peak_memory as tagger_peak

    return tagger_peak()


def load_base(settings: LoraSettings):
    """The base model through the transformers backend (the serving path), on CPU or GPU."""
    import torch

    from ..adapters.transformers_backend import TransformersBackend, TransformersConfig

    if settings.load_in_4bit:
        if not torch.cuda.is_available():
            raise ConfigError("QLoRA (4-bit) needs a CUDA GPU; on CPU train a small model in full precision (omit --qlora)")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise MissingDependency("bitsandbytes", "quant", "QLoRA (4-bit) training") from exc
    backend = TransformersBackend(TransformersConfig(
        model=settings.base_model, family=settings.family, device=settings.device, dtype=settings.dtype,
        load_in_4bit=settings.load_in_4bit,
    ))
    backend.load()
    return backend


def attach_lora(backend: Any, settings: LoraSettings, resume_from: Path | None):
    try:
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    except ImportError as exc:
        raise MissingDependency("peft", "transformers", "LoRA fine-tuning") from exc
    model = backend.model
    if settings.load_in_4bit:
        model = prepare_model_for_kbit_training(model)
    if resume_from is not None:
        model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
    else:
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=settings.targets(), bias="none")
        model = get_peft_model(model, config)
    backend.model = model
    return model


def train_reranker(
    settings: LoraSettings,
    train: list[ChoiceExample],
    held_out: dict[str, list[ChoiceExample]],
    output: str | Path,
    *,
    data: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    import torch

    from ..files import dir_sha256

    out = Path(output)
    resuming = _prepare_output(out, settings, resume=resume, overwrite=overwrite)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    _seed_everything(settings.seed)
    if not train:
        raise ConfigError("no training questions (no gold entities with at least two candidate types)")
    started = time.perf_counter()
    backend = load_base(settings)
    encoder = ChoiceEncoder(backend, settings.template)
    metrics: dict[str, Any] = {}
    before = {split: choice_predictions(backend.model, encoder, ex, settings.eval_batch_size) for split, ex in held_out.items()}
    for split, ex in held_out.items():
        metrics[f"{split}_accuracy_before"] = accuracy(before[split], ex)
    log.info("before training: %s", {k: round(v, 4) for k, v in metrics.items()})

    model = attach_lora(backend, settings, out / LAST_DIR / ADAPTER_DIR if resuming else None)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total = settings.max_steps or steps_per_epoch * settings.epochs
    warmup = int(total * settings.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    state = {"step": 0, "losses": [], "train_seconds": 0.0}
    if resuming:
        saved = torch.load(out / LAST_DIR / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = saved["loop"]
        torch.set_rng_state(saved["torch_rng"])
        log.info("resumed at step %d of %d", state["step"], total)

    pad = encoder.tokenizer.pad_token_id or 0
    device = _device_of(model)
    bar = _progress(progress, total, state["step"])
    while state["step"] < total:
        step = state["step"]
        epoch, index = divmod(step, steps_per_epoch)
        order = list(range(len(train)))
        random.Random(settings.seed * 1000 + epoch).shuffle(order)  # a pure function of (seed, epoch)
        chunk = order[index * settings.batch_size : (index + 1) * settings.batch_size]
        tick = time.perf_counter()
        batch = {k: v.to(device) for k, v in collate([encoder.training_item(train[i]) for i in chunk], pad).items()}
        loss = answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        state["train_seconds"] += time.perf_counter() - tick
        value = loss.item()
        state["losses"].append(round(value, 5))
        state["step"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        elif state["step"] % 20 == 0 or state["step"] == total:
            log.info("step %d/%d loss %.4f", state["step"], total, value)
        if settings.checkpoint_steps and state["step"] % settings.checkpoint_steps == 0 and state["step"] < total:
            _save_last(out, model, optimizer, schedule, state, settings)
    if bar is not None:
        bar.close()
    _save_last(out, model, optimizer, schedule, state, settings)

    after = {split: choice_predictions(model, encoder, ex, settings.eval_batch_size) for split, ex in held_out.items()}
    for split, ex in held_out.items():
        metrics[f"{split}_accuracy_after"] = accuracy(after[split], ex)
        changed = sum(max(a, key=a.get) != max(b, key=b.get) for a, b in zip(after[split], before[split]))
        shift = sum(sum(abs(a[k] - b[k]) for k in a) / 2 for a, b in zip(after[split], before[split]))
        metrics[f"{split}_answers_changed"] = changed
        metrics[f"{split}_mean_probability_shift"] = round(shift / max(1, len(ex)), 5)
    log.info("after training: %s", {k: v for k, v in metrics.items() if "accuracy" in k})

    adapter_dir = out / ADAPTER_DIR
    model.save_pretrained(str(adapter_dir))
    reranker = {
        "template": settings.template, "template_sha256": template_hash(settings.template),
        "granularity": settings.granularity, "hierarchy": settings.hierarchy if settings.granularity == "fine" else None,
        "top_k": settings.top_k, "context": settings.resolved_context(), "base_model": settings.base_model,
        "family": settings.family,
    }
    (adapter_dir / RERANKER_FILE).write_text(json.dumps(reranker, indent=2), encoding="utf-8")
    losses = state["losses"]
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10) :]
    manifest = {
        "kind": "lora-reranker",
        "base_model": {"path": settings.base_model, "family": settings.family, "identity": backend.identity(),
                       "sha256": dir_sha256(settings.base_model)},
        "adapter": {"path": str(adapter_dir), "sha256": dir_sha256(adapter_dir),
                    "trainable_parameters": sum(p.numel() for p in trainable)},
        "prompt": {"template": settings.template, "sha256": reranker["template_sha256"]},
        "settings": settings.model_dump(mode="json"),
        "target_modules": settings.targets(),
        "seed": settings.seed,
        "data": {**(data or {}), "train_questions": len(train), **{f"{s}_questions": len(e) for s, e in held_out.items()}},
        "metrics": {**metrics, "steps": state["step"], "loss_first_tenth": _mean(head), "loss_last_tenth": _mean(tail)},
        "losses": losses,
        "train_seconds": round(state["train_seconds"], 1),
        "seconds": round(time.perf_counter() - started, 1),
        "memory": peak_memory(),
        "device": str(device),
        "packages": _versions(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


def _versions() -> dict[str, str]:
    from ..manifest import package_versions

    return package_versions()


def _progress(enabled: bool | None, total: int, done: int):
    if enabled is None:
        enabled = sys.stderr.isatty() and not os.environ.get("CI")
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="lora", unit="step", dynamic_ncols=True)


def _save_last(out: Path, model: Any, optimizer: Any, schedule: Any, state: dict, settings: LoraSettings) -> None:
    import torch

    last = out / LAST_DIR
    tmp = out / (LAST_DIR + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp / ADAPTER_DIR))
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "loop": state,
                "torch_rng": torch.get_rng_state(), "settings": settings.model_dump(mode="json")}, tmp / STATE_FILE)
    if last.exists():
        import shutil

        shutil.rmtree(last)
    os.replace(tmp, last)


def _prepare_output(out: Path, settings: LoraSettings, *, resume: bool, overwrite: bool) -> bool:
    last = out / LAST_DIR / STATE_FILE
    resuming = resume and last.is_file()
    if resuming:
        import torch

        saved = torch.load(last, weights_only=False)["settings"]
        now = settings.model_dump(mode="json")
        differ = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if differ:
            raise ConfigError(f"cannot resume {out}: settings changed ({', '.join(differ)})")
    elif not overwrite and ((out / LAST_DIR).exists() or (out / ADAPTER_DIR).exists()):
        raise ConfigError(f"{out} already holds a fine-tuning run; pass --resume to continue it or --overwrite")
    elif overwrite:
        import shutil

        for stale in (out / LAST_DIR, out / ADAPTER_DIR):
            if stale.exists():
                shutil.rmtree(stale)
    out.mkdir(parents=True, exist_ok=True)
    return resuming
