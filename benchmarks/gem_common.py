"""Shared by the GEM and LoRA-reranker benchmarks: CLI steps in their own processes (skipped when
their output exists, so an interrupted benchmark resumes), scoring and change accounting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
RUNS = Path(os.environ.get("MMIE_BENCH_RUNS", ROOT / "runs" / "bench_gem"))


# A pipeline that re-types the entities already on the input records (rerank alone).
RERANK_ONLY = """name: {name}
inputs: [entities]
backends:
  llm: {backend}
stages:
  - stage: rerank.v1
    backend: llm
    params: {params}
"""


def cli(*args: str, done: Path | None = None, log: Path | None = None) -> float:
    """Run `mmie-pipe ARGS` (this checkout's package) unless `done` exists; returns wall seconds."""
    if done is not None and done.exists():
        print(f"skip (done): {' '.join(args[:3])} -> {done}", flush=True)
        return 0.0
    command = [sys.executable, "-m", "mmie_pipe.cli", *args]
    print("$ mmie-pipe " + " ".join(args), flush=True)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "a") if log else open(os.devnull, "w") as sink:
        subprocess.run(command, check=True, cwd=ROOT, env=env, stderr=sink if log else None)
    return time.perf_counter() - started


def records(path: Path):
    from mmie_pipe.data.jsonl import iter_prediction_records

    return list(iter_prediction_records(path))


def fine_scores(pred_path: Path) -> dict:
    from mmie_pipe.metrics import evaluate, join_by_id

    result = evaluate(join_by_id(records(pred_path)), "fmnerg").to_dict()
    return {name: result["metrics"][name]["micro"] for name in ("fmner", "mner_coarse")} | {"counts": result["counts"]}


def type_changes(before: Path, after: Path, field: str = "fine_type") -> dict:
    """Entities whose type the reranker changed: wrong -> right (better), right -> wrong (worse),
    wrong -> wrong; judged against the gold entity at the same character span."""
    gold_of = {}
    old = {}
    for record in records(before):
        for g in record.gold.entities if record.gold else ():
            gold_of[(record.id, g.start, g.end)] = getattr(g, field)
        for e in record.entities or ():
            old[(record.id, e.start, e.end)] = getattr(e, field)
    out = {"changed": 0, "better": 0, "worse": 0, "wrong_to_wrong": 0, "span_not_gold": 0}
    for record in records(after):
        for e in record.entities or ():
            key = (record.id, e.start, e.end)
            new = getattr(e, field)
            if key not in old or old[key] == new:
                continue
            out["changed"] += 1
            gold = gold_of.get(key)
            if gold is None:
                out["span_not_gold"] += 1
            elif new == gold:
                out["better"] += 1
            elif old[key] == gold:
                out["worse"] += 1
            else:
                out["wrong_to_wrong"] += 1
    return out


def gate_fractions(pred_path: Path, gammas=(0.1, 0.2, 0.4)) -> dict:
    from mmie_pipe.reranking import normalized_entropy

    values = [normalized_entropy(e.type_probs) for r in records(pred_path) for e in r.entities or () if e.type_probs]
    return {str(g): round(sum(v > g for v in values) / max(1, len(values)), 4) for g in gammas} | {"entities": len(values)}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}, indent=2))
    print(json.dumps(result, indent=2))
    return path
