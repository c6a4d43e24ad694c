"""PGIM with the tagger: one MiniLM + CRF tagger trained on post + PGIM's ChatGPT knowledge
(Twitter-2017 train), evaluated (a) with PGIM's knowledge, (b) with knowledge written by the
embedded model through the `knowledge` stage, (c) with no knowledge. What is the knowledge step
worth when a small local model writes it?

(a) and (c) run on the whole test split and on the tweets of (b); (b) reads the predictions of
`bench_mner_methods.py --pipelines pgim` (records carrying the knowledge SmolLM2 wrote).

    python benchmarks/bench_pgim_tagger.py --model runs/tagger-t17-pgim-small/last \\
        --own runs/bench_mner_methods/pgim/predictions.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from common import RESULTS, ROOT, save

from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import iter_prediction_records, write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.runner import Runner


def tag(model: str, data: Path, out: Path, context: list[str]) -> dict:
    raw = {"name": "pgim_tagger_eval", "inputs": ["knowledge"] if context else [],
           "stages": [{"stage": "tagger.v1", "params": {"model": model, "device": "cpu", "threads": 1, "context": context}}],
           "runtime": {"batch_size": 64, "cache": False}}
    runner = Runner(validate_pipeline(raw).config)
    started = time.perf_counter()
    summary = asyncio.run(runner.run(data, out, overwrite=True, progress=False))
    scores = evaluate(join_by_id(iter_prediction_records(out / "predictions.jsonl")), "mner").to_dict()
    return {"seconds": round(time.perf_counter() - started, 1), "records": summary.records, "errors": summary.errors,
            "f1": scores["metrics"]["mner"]["micro"]["f1"], "mner": scores["metrics"]["mner"], "counts": scores["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="trained tagger folder (best/ or last/)")
    parser.add_argument("--own", help="predictions of a pgim run (records with `knowledge`); without: only (a), (c) on the split")
    parser.add_argument("--skip-full", action="store_true", help="only the tweets of (b), not the whole test split")
    args = parser.parse_args()
    runs = Path(os.environ.get("MMIE_BENCH_RUNS", ROOT / "runs" / "bench_pgim_tagger"))
    runs.mkdir(parents=True, exist_ok=True)
    test = list(load_split("twitter2017", "test", knowledge="pgim"))
    own = [json.loads(line) for line in Path(args.own).read_text(encoding="utf-8").splitlines() if line.strip()] if args.own else []
    own = [r for r in own if not r.get("errors") and r.get("knowledge")]
    ids = {r["id"] for r in own}
    files = {"full": test, "subset": [r for r in test if r.id in ids]}
    paths = {}
    for name, records in files.items():
        paths[name] = runs / f"t17_test_{name}.jsonl"
        with paths[name].open("w", encoding="utf-8") as out:
            write_jsonl(records, out)
    paths["own"] = runs / "t17_test_subset_own_knowledge.jsonl"
    keep = ("id", "text", "tokens", "caption", "gold", "meta", "knowledge")
    paths["own"].write_text("".join(json.dumps({k: r[k] for k in keep if k in r}) + "\n" for r in own), encoding="utf-8")
    results = {} if args.skip_full else {
        "a_pgim_knowledge_full": tag(args.model, paths["full"], runs / "a_full", ["knowledge"]),
        "c_no_knowledge_full": tag(args.model, paths["full"], runs / "c_full", []),
    }
    if own:
        results |= {
            "a_pgim_knowledge_subset": tag(args.model, paths["subset"], runs / "a_subset", ["knowledge"]),
            "b_own_knowledge_subset": tag(args.model, paths["own"], runs / "b_subset", ["knowledge"]),
            "c_no_knowledge_subset": tag(args.model, paths["subset"], runs / "c_subset", []),
        }
    # Parts may be run separately; earlier results of the others are kept.
    previous = RESULTS / "pgim_tagger.json"
    kept = {k: v for k, v in (json.loads(previous.read_text()) if previous.exists() else {}).items()
            if k.startswith(("a_", "b_", "c_")) and k not in results}
    results = {**kept, **results}
    manifest = Path(args.model).parent / "manifest.json"
    save("pgim_tagger", {"model": args.model, "subset_tweets": len(ids), "load_average_at_end": os.getloadavg(),
                         "training": json.loads(manifest.read_text()) if manifest.exists() else None, **results})


if __name__ == "__main__":
    main()
