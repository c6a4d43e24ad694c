"""Benchmark: the transformer + CRF tagger on Twitter-2017 / 2015, with and without context.

Each experiment is one `mmie-pipe train tagger` run in its own process (so peak memory is that
run's), resumable: a finished run (its best/manifest.json exists) is skipped, an interrupted one
continues from its last checkpoint. Runs go to $MMIE_BENCH_RUNS (default runs/bench_tagger);
each finished run's manifest is copied to benchmarks/results/tagger_manifests/, the table is
written to benchmarks/results/tagger.md and the numbers to benchmarks/results/tagger.json.

    python benchmarks/bench_tagger.py                      # every experiment, in order
    python benchmarks/bench_tagger.py --only t17-text t17-pgim
    python benchmarks/bench_tagger.py --table-only         # rebuild the table from finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = Path(os.environ.get("MMIE_BENCH_RUNS", ROOT / "runs" / "bench_tagger"))
MANIFESTS = RESULTS / "tagger_manifests"

# Published references (XLM-RoBERTa-large + CRF with PGIM knowledge), test micro F1.
PUBLISHED = {"twitter2017": ("PGIM (XLM-R-large + CRF + ChatGPT knowledge)", 91.43),
             "twitter2015": ("PGIM (XLM-R-large + CRF + ChatGPT knowledge)", 79.33)}

COMMON = [
    "--encoder", "all-MiniLM-L6-v2", "--scheme", "BIO", "--batch-size", "32", "--lr-encoder", "1e-4",
    "--lr-head", "5e-3", "--warmup-ratio", "0.1", "--seed", "42", "--patience", "2", "--threads", "2",
    "--checkpoint-steps", "50", "--freeze-embeddings", "--no-progress",
]


def experiment(name: str, dataset: str, context: str, epochs: int, max_length: int) -> dict:
    args = ["--train", f"{dataset}:train", "--dev", f"{dataset}:valid", "--test", f"{dataset}:test"]
    if context == "pgim":
        args += ["--knowledge", "pgim", "--context", "knowledge"]
    elif context == "caption":
        args += ["--captions", "blip2", "--context", "caption"]
    args += ["--epochs", str(epochs), "--max-length", str(max_length)]
    return {"name": name, "dataset": dataset, "context": context, "args": args}


EXPERIMENTS = [
    experiment("t17-pgim", "twitter2017", "pgim", 3, 96),
    experiment("t17-text", "twitter2017", "none", 3, 128),
    experiment("t17-caption", "twitter2017", "caption", 3, 128),
    experiment("t15-text", "twitter2015", "none", 3, 128),
    experiment("t15-pgim", "twitter2015", "pgim", 3, 96),
]


def command(exp: dict) -> list[str]:
    # `mmie_pipe.commands.train` runs the same `train tagger` command as the `mmie-pipe` CLI.
    return [sys.executable, "-m", "mmie_pipe.commands.train", "train", "tagger", *exp["args"], *COMMON,
            "--output", str(RUNS / exp["name"]), "--resume"]


def run(exp: dict) -> None:
    out = RUNS / exp["name"]
    if (MANIFESTS / f"{exp['name']}.json").is_file():
        print(f"[{exp['name']}] done already", flush=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    cmd = command(exp)
    print(f"[{exp['name']}] {' '.join(cmd)}", flush=True)
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out / "train.log", "a", encoding="utf-8") as log:
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"[{exp['name']}] exit {code} after {time.time() - started:.0f}s", flush=True)
    if code == 0:
        MANIFESTS.mkdir(parents=True, exist_ok=True)
        (MANIFESTS / f"{exp['name']}.json").write_bytes((out / "best" / "manifest.json").read_bytes())


def row(exp: dict) -> dict | None:
    path = MANIFESTS / f"{exp['name']}.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    test = m["scores"].get("test", {}).get("type", {}).get("micro", {})
    dev = m["scores"].get("dev", {}).get("type", {}).get("micro", {})
    enc = m["data"]["train_encoding"]
    return {
        "name": exp["name"], "dataset": exp["dataset"], "context": exp["context"],
        "max_length": m["settings"]["max_length"], "epochs_run": m["training"]["epochs_run"],
        "best_epoch": m["training"]["best_epoch"],
        "dev_f1": dev.get("f1"), "test_p": test.get("precision"), "test_r": test.get("recall"),
        "test_f1": test.get("f1"), "train_minutes": m["training"]["train_seconds"] / 60,
        "total_minutes": m["seconds"] / 60, "peak_rss_mib": m["memory"].get("peak_rss_mib"),
        "context_truncated": enc.get("context_truncated"), "train_examples": enc.get("examples"),
        "command": " ".join(["mmie-pipe train tagger", *exp["args"], *COMMON, "--output", f"runs/bench_tagger/{exp['name']}"]),
    }


def table(rows: list[dict]) -> str:
    pct = lambda v: "" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [
        "| run | data | context | max len | epochs (best) | dev F1 | test P | test R | test F1 | train min | total min | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['dataset']} | {r['context']} | {r['max_length']} | {r['epochs_run']} ({r['best_epoch']}) "
            f"| {pct(r['dev_f1'])} | {pct(r['test_p'])} | {pct(r['test_r'])} | {pct(r['test_f1'])} "
            f"| {r['train_minutes']:.1f} | {r['total_minutes']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    for dataset in sorted({r["dataset"] for r in rows}):
        label, f1 = PUBLISHED[dataset]
        lines.append(f"| published | {dataset} | {label} | | | | | | {f1:.2f} | | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="experiment names")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads per run (default 2)")
    args = parser.parse_args()
    if args.threads:
        COMMON[COMMON.index("--threads") + 1] = str(args.threads)
    chosen = [e for e in EXPERIMENTS if not args.only or e["name"] in args.only]
    if not args.table_only:
        for exp in chosen:
            run(exp)
    rows = [r for r in (row(e) for e in EXPERIMENTS) if r]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tagger.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / "tagger.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
