"""Time loading all of GMNER (text + VOC boxes) and scoring its test split, on one core.

    .venv/bin/python benchmarks/bench_data_eval.py [--data-root DIR] [--repeat 5]

Scoring uses a deterministic perturbation of the gold (dropped entities, moved boxes) so the
matcher does real work; the three GMNER metrics (GMNER, MNER, EEG) are computed each time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmie_pipe.data import load_split, resolve_data_root  # noqa: E402
from mmie_pipe.metrics import evaluate, join_by_id  # noqa: E402
from mmie_pipe.records import Box  # noqa: E402


def load_all_gmner(root):
    return {split: list(load_split("gmner", split, data_root=root)) for split in ("train", "dev", "test")}


def predictions_from(gold_records):
    rng = random.Random(0)
    preds = []
    for record in gold_records:
        pred = record.model_copy()
        entities = []
        for entity in record.gold.entities:
            if rng.random() < 0.1:
                continue
            if entity.boxes and rng.random() < 0.2:
                b = entity.boxes[0]
                shift = (b.xmax - b.xmin) * 0.6
                entity = entity.model_copy(update={"boxes": [Box(xmin=b.xmin + shift, ymin=b.ymin, xmax=b.xmax + shift, ymax=b.ymax)]})
            entities.append(entity)
        pred.entities = entities
        preds.append(pred)
    return preds


def best_and_median(fn, repeat):
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    root = resolve_data_root(args.data_root)

    best, median, splits = best_and_median(lambda: load_all_gmner(root), args.repeat)
    n_records = sum(len(v) for v in splits.values())
    n_entities = sum(len(r.gold.entities) for v in splits.values() for r in v)
    n_boxes = sum(len(e.boxes) for v in splits.values() for r in v for e in r.gold.entities)
    print(f"load GMNER train+dev+test with boxes: {n_records} tweets, {n_entities} entities, "
          f"{n_boxes} entity boxes: best {best:.3f}s, median {median:.3f}s")

    preds = predictions_from(splits["test"])
    best, median, result = best_and_median(lambda: evaluate(join_by_id(preds, splits["test"]), "gmner"), args.repeat)
    f1 = {name: round(100 * m.scores.micro.f1, 2) for name, m in result.metrics.items()}
    print(f"score GMNER test (gmner/mner/eeg, offsets): {len(preds)} records: "
          f"best {best:.3f}s, median {median:.3f}s; F1 {f1}")
    best, median, _ = best_and_median(lambda: evaluate(join_by_id(preds, splits["test"]), "gmner", "string"), args.repeat)
    print(f"score GMNER test (string mode): best {best:.3f}s, median {median:.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
