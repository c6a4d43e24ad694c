"""Benchmark: LoRA fine-tuning of a text-only type reranker (issue "LoRA fine-tuning of rerankers").

SmolLM2-135M-Instruct (the embedded GGUF, dequantised into a transformers folder by
`gguf_to_hf.py`) with BLIP-2 captions as context, LoRA rank 64 on CPU, on subsets sized for a
shared 2-core machine:

- `t17`: Twitter-2017, 4 coarse types (every question has all 4 as options).
- `fmnerg`: FMNERG fine types, options among the gold coarse type's fine types (top 5: gold + 4
  sampled confusables).

Each reports choice accuracy on dev and test questions before and after training, training time
and peak memory (from the run's manifest). `--gem` then re-types the GEM tagger's uncertain
FMNERG test entities (from `bench_gem.py`'s `before/` run) with the base model and with the
adapter, through the `transformers` backend, and scores fine-type F1.

    python benchmarks/bench_lora_reranker.py --only t17 fmnerg [--gem] [--train-limit 250] [--eval-limit 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gem_common import RERANK_ONLY, RUNS, cli, fine_scores, save, type_changes

BASE = RUNS.parent / "smollm2-135m-hf"


def finetune(name: str, args, extra: list[str]) -> dict:
    out = RUNS / f"lora-{name}"
    cli("finetune", "reranker", "--base-model", str(BASE), "--captions", "blip2", "--limit", str(args.train_limit),
        "--eval-limit", str(args.eval_limit), "--epochs", str(args.epochs), "--batch-size", "8", "--lr", str(args.lr),
        "--seed", "0", "--threads", str(args.threads), "--checkpoint-steps", "20", "--no-progress", "--resume",
        "--output", str(out), *extra, done=out / "manifest.json", log=RUNS / "log.txt")
    m = json.loads((out / "manifest.json").read_text())
    return {"metrics": m["metrics"], "train_seconds": m["train_seconds"], "seconds": m["seconds"], "memory": m["memory"],
            "questions": {k: v for k, v in m["data"].items() if k.endswith("_questions")},
            "answer_positions": m["data"]["build"]["train"]["answer_positions"],
            "settings": {k: m["settings"][k] for k in ("rank", "alpha", "dropout", "lr", "batch_size", "epochs", "top_k")},
            "target_modules": m["target_modules"]}


def gem_with(adapter: Path | None, before: Path, limit: int, threads: int) -> Path:
    backend = {"kind": "transformers", "model": str(BASE), "device": "cpu"}
    params = {"gamma": 0.2, "top_k": 5, "granularity": "fine", "hierarchy": "fmnerg", "context": "caption"}
    tag = "base"
    if adapter is not None:
        backend["lora_modules"] = {"gem": str(adapter)}
        params["lora"] = "gem"
        tag = "adapter"
    config = RUNS / f"rerank_{tag}.yaml"
    config.write_text(RERANK_ONLY.format(name="rerank-transformers", backend=json.dumps(backend), params=json.dumps(params)))
    out = RUNS / f"after-{tag}"
    cli("run", str(config), "--input", str(before), "-o", str(out), "--limit", str(limit), done=out / "manifest.json",
        log=RUNS / "log.txt")
    return out


def rerank_counts(run: Path) -> dict:
    attempt = json.loads((run / "manifest.json").read_text())["attempts"][-1]
    return {k: v for k, v in attempt.items() if k.startswith("rerank.")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=["t17", "fmnerg"])
    ap.add_argument("--train-limit", type=int, default=250, help="training tweets")
    ap.add_argument("--eval-limit", type=int, default=100, help="dev and test tweets")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gem", action="store_true", help="fine-type F1 of rerank with base vs adapter")
    ap.add_argument("--gem-limit", type=int, default=300, help="FMNERG test tweets for --gem")
    args = ap.parse_args()
    import os
    import sys

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(Path(__file__).parent))
    from gguf_to_hf import convert

    convert(BASE)
    RUNS.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": "python benchmarks/bench_lora_reranker.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if v not in (None, False)), "base_model": "SmolLM2-135M-Instruct (embedded Q4_1 GGUF, dequantised)"}
    if "t17" in args.only:
        result["t17"] = finetune("t17", args, ["--train", "twitter2017:train", "--dev", "twitter2017:valid",
                                               "--test", "twitter2017:test"])
    if "fmnerg" in args.only:
        result["fmnerg"] = finetune("fmnerg", args, ["--train", "fmnerg:train", "--dev", "fmnerg:dev",
                                                     "--test", "fmnerg:test", "--granularity", "fine"])
    if args.gem:
        before = RUNS / "before" / "predictions.jsonl"
        base = gem_with(None, before, args.gem_limit, args.threads)
        tuned = gem_with(RUNS / "lora-fmnerg" / "adapter", before, args.gem_limit, args.threads)
        limited = RUNS / f"before-first{args.gem_limit}.jsonl"
        limited.write_text("".join(open(before).readlines()[: args.gem_limit]))
        result["gem_fine"] = {
            "tweets": args.gem_limit,
            "tagger_only": fine_scores(limited),
            "rerank_base": fine_scores(base / "predictions.jsonl"),
            "rerank_adapter": fine_scores(tuned / "predictions.jsonl"),
            "changes_base": type_changes(limited, base / "predictions.jsonl"),
            "changes_adapter": type_changes(limited, tuned / "predictions.jsonl"),
            "counts_base": rerank_counts(base),
            "counts_adapter": rerank_counts(tuned),
        }
    # Experiments run separately (--only t17, --only fmnerg) share one result file.
    previous = RUNS.parent.parent / "benchmarks" / "results" / "lora_reranker.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        result = {**old, **result, "commands": sorted(set(old.get("commands", [old.get("command")])) | {result["command"]})}
    save("lora_reranker", result)


if __name__ == "__main__":
    main()
