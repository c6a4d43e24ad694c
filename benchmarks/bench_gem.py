"""Benchmark: GEM on FMNERG test (issue "GEM").

1. A MiniLM + CRF tagger with GEM's coarse + fine heads (`train tagger --gem`) on the first
   `--train-limit` tweets of FMNERG train (a subset: the full set does not fit a shared 2-core CPU
   budget), selected on FMNERG dev.
2. The tagger alone on FMNERG test (BLIP-2 captions attached for the reranker): fine-type F1
   "before"; the fraction of entities the gate sends to the reranker at three gammas.
3. `rerank` (fine-grained, candidates among the coarse type's fine types, top 5, gamma 0.2) with the
   embedded SmolLM2 and the caption, on the tagger's predictions: fine-type F1 "after", and how many
   changed types became right / wrong.

    python benchmarks/bench_gem.py [--train-limit 2000] [--epochs 2] [--test-limit N]

Steps whose outputs exist are skipped (runs in $MMIE_BENCH_RUNS, default runs/bench_gem).
"""

from __future__ import annotations

import argparse
import json

from gem_common import RERANK_ONLY, RUNS, cli, fine_scores, gate_fractions, save, type_changes

TAGGER_ONLY = """name: tagger-only
stages:
  - stage: tagger.v1
    params: {{model: {model}, device: cpu, threads: {threads}}}
"""
EMBEDDED = '{kind: llama_server, model: "embedded:smollm2", parallel: 8}'


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test-limit", type=int)
    ap.add_argument("--gamma", type=float, default=0.2)
    args = ap.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    log = RUNS / "log.txt"

    test = RUNS / "fmnerg_test.jsonl"
    limit = ["--limit", str(args.test_limit)] if args.test_limit else []
    cli("data", "convert", "fmnerg", "--split", "test", "--captions", "blip2", "-o", str(test), *limit, done=test, log=log)

    tagger = RUNS / "tagger"
    train_seconds = cli(
        "train", "tagger", "--train", "fmnerg:train", "--dev", "fmnerg:dev", "--gem", "--limit", str(args.train_limit),
        "--epochs", str(args.epochs), "--max-length", "128", "--batch-size", "32", "--lr-encoder", "1e-4",
        "--lr-head", "5e-3", "--seed", "42", "--threads", str(args.threads), "--freeze-embeddings",
        "--checkpoint-steps", "50", "--no-progress", "--output", str(tagger), "--resume",
        done=tagger / "best" / "manifest.json", log=log,
    )

    (RUNS / "tagger_only.yaml").write_text(TAGGER_ONLY.format(model=tagger / "best", threads=args.threads))
    before = RUNS / "before"
    cli("run", str(RUNS / "tagger_only.yaml"), "--input", str(test), "-o", str(before),
        done=before / "manifest.json", log=log)

    params = json.dumps({"gamma": args.gamma, "top_k": 5, "granularity": "fine", "hierarchy": "fmnerg", "context": "caption"})
    (RUNS / "rerank_embedded.yaml").write_text(RERANK_ONLY.format(name="rerank-only", backend=EMBEDDED, params=params))
    after = RUNS / "after-embedded"
    rerank_seconds = cli("run", str(RUNS / "rerank_embedded.yaml"), "--input", str(before / "predictions.jsonl"),
                         "-o", str(after), done=after / "manifest.json", log=log)

    manifest = json.loads((after / "manifest.json").read_text())
    tagger_manifest = json.loads((tagger / "manifest.json").read_text())
    save("gem_fmnerg", {
        "command": "python benchmarks/bench_gem.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "tagger": {"train_tweets": args.train_limit, "epochs": args.epochs, "best_dev": tagger_manifest["training"]["best_dev_f1"],
                   "train_seconds": tagger_manifest.get("training", {}).get("train_seconds", train_seconds) or train_seconds,
                   "memory": tagger_manifest.get("memory")},
        "test_records": sum(1 for _ in open(test)),
        "before": fine_scores(before / "predictions.jsonl"),
        "after_embedded": fine_scores(after / "predictions.jsonl"),
        "gated_fraction": gate_fractions(before / "predictions.jsonl"),
        "rerank_counts": {k: v for k, v in manifest["attempts"][-1].items() if k.startswith("rerank.")},
        "rerank_calls": {k: manifest["attempts"][-1].get(k) for k in ("model_calls", "cache_hits", "seconds")},
        "changes": type_changes(before / "predictions.jsonl", after / "predictions.jsonl"),
        "rerank_wall_seconds": round(rerank_seconds, 1),
    })


if __name__ == "__main__":
    main()
