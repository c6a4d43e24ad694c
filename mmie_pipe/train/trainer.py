"""The training loop: AdamW with separate encoder / head learning rates, linear warmup and decay,
dev-F1 model selection with early stopping, resumable from the last checkpoint, and a manifest.

Output directory:
  best/      the selected tagger (load it with the `tagger` stage), with manifest.json
  last/      the latest checkpoint plus `trainer_state.pt` (optimizer, schedule, RNG, history)
  manifest.json
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from .config import TaggerConfig
from .data import DataSource, EncodingStats, encode_examples, label_inventory, read_records
from .tagging import Scheme

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "manifest.json"


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # -- the model ------------------------------------------------------------------------------
    encoder: str = "all-MiniLM-L6-v2"
    scheme: Scheme = "BIO"
    context_fields: list[str] = Field(default_factory=list)
    max_length: int = Field(default=128, ge=8)
    dropout: float = 0.1
    gem: bool = False
    beta: float = 0.1
    # Keep the (sub)word embedding matrix fixed: on CPU it is half of a small encoder's weights and
    # most of the optimizer's time; the papers fine-tune it.
    freeze_embeddings: bool = False
    # -- the loop -------------------------------------------------------------------------------
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=16, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    lr_encoder: float = 5e-5
    lr_head: float = 5e-3  # linear head(s), CRF transitions and GEM's coarse-to-fine matrix
    weight_decay: float = 0.01
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    max_grad_norm: float = 1.0
    seed: int = 42
    patience: int | None = Field(default=3, ge=1)  # epochs without a better dev F1 before stopping
    max_steps: int | None = Field(default=None, ge=1)  # stop early (smoke tests)
    checkpoint_steps: int | None = Field(default=None, ge=1)  # also checkpoint mid-epoch
    device: str = "auto"
    threads: int | None = None

    # Fields that may change between a run and its resumption (they do not change the result).
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("epochs", "patience", "device", "threads", "eval_batch_size", "checkpoint_steps")

    def result_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(self.RESUMABLE_CHANGES))


def tagger_config(settings: TrainSettings, train_records) -> TaggerConfig:
    coarse, fine, fine_to_coarse = label_inventory(train_records)
    if not coarse:
        raise ConfigError("the training data has no typed gold entities")
    if settings.gem and not fine:
        raise ConfigError("GEM mode needs gold entities with `fine_type` (e.g. FMNERG)")
    return TaggerConfig(
        encoder=settings.encoder,
        scheme=settings.scheme,
        types=coarse,
        fine_types=fine if settings.gem else None,
        fine_to_coarse=fine_to_coarse if settings.gem else {},
        beta=settings.beta,
        context_fields=settings.context_fields,
        max_length=settings.max_length,
        dropout=settings.dropout,
    )


def train_tagger(
    settings: TrainSettings,
    train: DataSource,
    output: str | os.PathLike[str],
    *,
    dev: DataSource | None = None,
    test: DataSource | None = None,
    resume: bool = False,
    overwrite: bool = False,
    allow_download: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train, select on dev, score on test; returns the manifest (also written to disk)."""
    from .checkpoint import build_tagger, load_tagger, require_training_stack

    require_training_stack()
    import torch

    out = Path(output)
    last_dir, best_dir = out / "last", out / "best"
    resuming = _prepare_output(out, resume=resume, overwrite=overwrite)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    _seed_everything(settings.seed)
    started = time.time()

    records = {"train": read_records(train)}
    if dev is not None:
        records["dev"] = read_records(dev)
    if test is not None:
        records["test"] = read_records(test)

    if resuming:
        state = torch.load(last_dir / STATE_FILE, weights_only=True)
        if state["settings"] != settings.result_fields():
            changed = sorted(k for k, v in settings.result_fields().items() if state["settings"].get(k) != v)
            raise ConfigError(f"cannot resume {out}: settings differ from the saved run ({', '.join(changed)})")
        if state.get("train_data", train.describe()) != train.describe():
            raise ConfigError(f"cannot resume {out}: it was trained on {state['train_data']}, not {train.describe()}")
        device = _device(settings.device)
        tagger = load_tagger(last_dir, device=device)
        config = tagger.config
    else:
        state = None
        config = tagger_config(settings, records["train"])
        tagger = build_tagger(config, allow_download=allow_download)
        device = _device(settings.device)
        tagger.model.to(device)

    from .encoding import InputEncoder

    encoder = InputEncoder(tagger.tokenizer, config.max_length)
    examples, train_stats = encode_examples(records["train"], config, encoder)
    if not examples:
        raise ConfigError("no usable training records (they need tokens and gold)")
    loop = _Loop(settings, tagger, examples, device, records.get("dev"), out, progress, train.describe())
    if state is not None:
        loop.restore(state)
    loop.run()

    best = load_tagger(best_dir, device=device) if best_dir.exists() else tagger
    from .evaluation import score_tagger
    from .predictor import Predictor

    predictor = Predictor(best, batch_size=settings.eval_batch_size)
    final_scores = {split: score_tagger(predictor, records[split]) for split in ("dev", "test") if split in records}
    if not best_dir.exists():
        from .checkpoint import save_tagger

        save_tagger(best, best_dir)
    manifest = _manifest(settings, config, train, dev, test, records, train_stats, loop, final_scores, started, device)
    text = json.dumps(manifest, indent=2, ensure_ascii=False)
    (out / MANIFEST_FILE).write_text(text, encoding="utf-8")
    (best_dir / MANIFEST_FILE).write_text(text, encoding="utf-8")
    return manifest


def _prepare_output(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """Whether the run resumes; refuses to mix a new run into an old one's directory."""
    last_dir, best_dir = out / "last", out / "best"
    resuming = resume and (last_dir / STATE_FILE).is_file()
    if not resuming and not overwrite and (last_dir.exists() or best_dir.exists()):
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or --overwrite")
    if overwrite and not resume:
        import shutil

        for stale in (last_dir, best_dir):
            if stale.exists():
                shutil.rmtree(stale)
    out.mkdir(parents=True, exist_ok=True)
    return resuming


class _Loop:
    """Epochs of shuffled mini-batches; the order of epoch `e` is a pure function of (seed, e),
    so a resumed run skips exactly the batches it had done."""

    def __init__(self, settings: TrainSettings, tagger, examples, device: str, dev_records, out: Path, progress, train_data):
        from transformers import get_linear_schedule_with_warmup

        self.settings = settings
        self.tagger = tagger
        self.model = tagger.model
        self.examples = examples
        self.device = device
        self.dev_records = dev_records
        self.out = out
        self.progress = progress
        self.train_data = train_data  # where the training records came from (checked on resume)
        self.steps_per_epoch = (len(examples) + settings.batch_size - 1) // settings.batch_size
        self.total_steps = settings.epochs * self.steps_per_epoch
        if settings.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.max_steps)
        if settings.freeze_embeddings:
            self.model.encoder.get_input_embeddings().weight.requires_grad_(False)
        self.optimizer = _adamw(_parameter_groups(self.model, settings))
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(settings.warmup_ratio * self.total_steps), self.total_steps
        )
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_f1 = -1.0
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.stopped_early = False
        self.started = time.time()
        self.earlier_seconds = 0.0  # wall time of the invocations this run resumed from

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        import torch

        return {
            "settings": self.settings.result_fields(),
            "train_data": self.train_data,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "stopped_early": self.stopped_early,
            "wall_seconds": self.wall_seconds,
            "rng_torch": torch.get_rng_state(),
            "rng_python": random.getstate(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        import torch

        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in ("epoch", "step_in_epoch", "global_step", "best_f1", "best_epoch", "bad_epochs", "history", "train_seconds", "stopped_early"):
            setattr(self, key, state[key])
        self.earlier_seconds = state.get("wall_seconds", 0.0)
        torch.set_rng_state(state["rng_torch"])
        random.setstate(state["rng_python"])
        log.info("resuming at epoch %d, step %d of the epoch (global step %d)", self.epoch + 1, self.step_in_epoch, self.global_step)

    @property
    def wall_seconds(self) -> float:
        """Wall time of the run so far, across resumptions."""
        return self.earlier_seconds + time.time() - self.started

    def save_last(self) -> None:
        import torch

        from .checkpoint import save_tagger

        state = self.state()
        save_tagger(self.tagger, self.out / "last", write_extra=lambda tmp: torch.save(state, tmp / STATE_FILE))

    # -- training ---------------------------------------------------------------------------------
    def run(self) -> None:
        while self.epoch < self.settings.epochs and not self._done() and not self.stopped_early:
            self._end_epoch(self._train_epoch())

    def _done(self) -> bool:
        return self.global_step >= self.total_steps

    def _batches(self):
        import torch

        generator = torch.Generator().manual_seed(self.settings.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        size = self.settings.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def _train_epoch(self) -> float:
        import torch

        from .encoding import collate

        self.model.train()
        batches = self._batches()
        pad_id = self.tagger.tokenizer.pad_token_id or 0
        bar = _progress_bar(self.progress, len(batches), self.step_in_epoch, f"epoch {self.epoch + 1}/{self.settings.epochs}")
        running, count = 0.0, 0
        tick = epoch_started = time.time()
        try:
            for batch_ids in batches[self.step_in_epoch :]:
                if self._done():
                    break
                chosen = [self.examples[i] for i in batch_ids]
                heads = chosen[0].tags.keys()
                batch = collate([e.encoded for e in chosen], pad_id, {h: [e.tags[h] for e in chosen] for h in heads})
                batch = {k: v.to(self.device) for k, v in batch.items()}
                loss = self.model.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.step_in_epoch += 1
                self.global_step += 1
                running += loss.item()
                count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{running / count:.3f}", refresh=False)
                elif self.global_step % 20 == 0:
                    rate = (time.time() - epoch_started) / count
                    log.info("step %d/%d loss %.4f (%.2f s/step)", self.global_step, self.total_steps, running / count, rate)
                if self.settings.checkpoint_steps and self.global_step % self.settings.checkpoint_steps == 0:
                    self.train_seconds += time.time() - tick
                    tick = time.time()
                    self.save_last()
        finally:
            self.train_seconds += time.time() - tick
            if bar is not None:
                bar.close()
        return running / count if count else float("nan")

    def _end_epoch(self, loss: float) -> None:
        from .checkpoint import save_tagger

        entry: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.global_step, "train_loss": loss}
        improved = self.dev_records is None
        if self.dev_records is not None:
            from .evaluation import score_tagger, selection_f1
            from .predictor import Predictor

            tick = time.time()
            scores = score_tagger(Predictor(self.tagger, batch_size=self.settings.eval_batch_size), self.dev_records)
            f1 = selection_f1(scores, self.tagger.config.span_head)
            micro = {name: {k: round(v, 4) for k, v in s["micro"].items()} for name, s in scores.items()}
            entry.update(dev=micro, dev_seconds=round(time.time() - tick, 1))
            improved = f1 > self.best_f1
            if improved:
                self.best_f1, self.best_epoch, self.bad_epochs = f1, self.epoch + 1, 0
            else:
                self.bad_epochs += 1
            log.info("epoch %d: loss %.4f, dev F1 %.4f (best %.4f at epoch %s)", self.epoch + 1, loss, f1, self.best_f1, self.best_epoch)
        if improved:
            save_tagger(self.tagger, self.out / "best")
            if self.dev_records is None:
                self.best_epoch = self.epoch + 1
        self.history.append(entry)
        self.epoch += 1
        self.step_in_epoch = 0
        patience = self.settings.patience
        if patience is not None and self.bad_epochs >= patience and self.epoch < self.settings.epochs:
            self.stopped_early = True
            log.info("early stop: no better dev F1 for %d epochs", self.bad_epochs)
        self.save_last()


def _parameter_groups(model, settings: TrainSettings) -> list[dict[str, Any]]:
    """Encoder and head at their own learning rates; no weight decay on biases, norms and the
    CRF (whose pinned illegal-transition scores must not decay towards zero)."""
    head_ids = {id(p) for p in model.head_parameters()}
    crf_ids = {id(p) for p in model.crfs.parameters()}
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if id(param) in head_ids else "encoder"
        decay = param.ndim >= 2 and id(param) not in crf_ids and "norm" not in name.lower()
        groups.setdefault((part, decay), []).append(param)
    rates = {"encoder": settings.lr_encoder, "head": settings.lr_head}
    return [
        {"params": params, "lr": rates[part], "weight_decay": settings.weight_decay if decay else 0.0}
        for (part, decay), params in groups.items()
    ]


def _adamw(groups: list[dict[str, Any]]):
    """The fused AdamW kernel where this torch build has one for the device (much faster on CPU)."""
    import torch

    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups)


def _progress_bar(enabled: bool | None, total: int, done: int, description: str):
    if enabled is None:
        enabled = sys.stderr.isatty() and not os.environ.get("CI")
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=description, unit="batch", dynamic_ncols=True)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _device(requested: str) -> str:
    from .predictor import pick_device

    return pick_device(requested)


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA allocation when used), in MiB."""
    import resource

    import torch

    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _manifest(settings, config, train, dev, test, records, stats: EncodingStats, loop: _Loop, scores, started, device):
    import platform

    import torch

    from ..manifest import git_revision, package_versions

    versions = package_versions()
    for name in ("pytorch-crf", "safetensors", "tokenizers"):
        try:
            from importlib import metadata

            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            continue
    return {
        "kind": "tagger",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tagger": config.model_dump(mode="json"),
        "settings": settings.model_dump(mode="json"),
        "seed": settings.seed,
        "data": {
            "train": {**train.describe(), "records": len(records["train"])},
            **({"dev": {**dev.describe(), "records": len(records["dev"])}} if dev else {}),
            **({"test": {**test.describe(), "records": len(records["test"])}} if test else {}),
            "train_encoding": stats.__dict__,
        },
        "training": {
            "epochs_run": loop.epoch,
            "steps": loop.global_step,
            "stopped_early": loop.stopped_early,
            "best_epoch": loop.best_epoch,
            "best_dev_f1": loop.best_f1 if loop.best_f1 >= 0 else None,
            "history": loop.history,
            "train_seconds": round(loop.train_seconds, 1),  # optimizer steps only, across resumptions
            "resumed": loop.earlier_seconds > 0,
        },
        "scores": scores,
        # Wall time across resumptions (`seconds`) and of this invocation alone.
        "seconds": round(loop.earlier_seconds + time.time() - started, 1),
        "seconds_this_invocation": round(time.time() - started, 1),
        "memory": peak_memory(),
        "device": device,
        "threads": torch.get_num_threads(),
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_revision": git_revision(),
    }
