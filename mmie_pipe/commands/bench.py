"""`mmie-pipe bench SPEC.yaml`: a grid of pipeline configs over data sets, each cell a normal run
(cached, resumable), scored with the project's metrics, with tokens, cost, tables and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError, MmieError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark a grid of pipelines / prompts / shots / models on data sets")
    p.add_argument("spec", type=Path, help="bench spec YAML (see docs/bench.md)")
    p.add_argument("--output", "-o", type=Path, help="bench directory (default: the spec's `output`, else runs/bench-NAME)")
    p.add_argument("--dry-run", action="store_true", help="print the cells, the model calls each needs and the estimated cost")
    p.add_argument("--budget", help="stop before a cell would exceed it: '50000 tokens', '50k tokens', '$2.50'")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE",
                   help="run only the cells with this axis value, e.g. pipeline=ner or shots=5 (repeatable)")
    p.add_argument("--prices", help="price table YAML (default: the spec's `prices`, else the shipped OpenAI example)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="per-cell progress bars (default: on a terminal only)")
    p.set_defaults(func=run_bench_command)


def _only(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--only expects AXIS=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def run_bench_command(args: argparse.Namespace) -> int:
    from ..bench.execute import parse_budget, plan_cells, prepare_data, run_async, run_cells
    from ..bench.plots import write_plots
    from ..bench.results import RESULTS_MD, write_manifest, write_results
    from ..bench.spec import expand, load_spec
    from ..pricing import format_cost, load_prices

    try:
        spec, base = load_spec(args.spec)
        budget = parse_budget(args.budget) if args.budget else None
        cells = expand(spec, base, _only(args.only) or None)
        if not cells:
            raise ConfigError("no cell matches --only")
        prices_path = args.prices or (str(base / spec.prices) if spec.prices else None)
        prices = load_prices(prices_path)
        out_dir = args.output or Path(spec.output if spec.output else f"runs/bench-{spec.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        inputs = prepare_data(spec, base, out_dir)
        if args.dry_run:
            return _print_plan(run_async(plan_cells(cells, inputs, out_dir)), prices, format_cost, out_dir)
        print(f"bench {spec.name}: {len(cells)} cells -> {out_dir}", file=sys.stderr)

        def on_cell(outcome) -> None:
            print(f"  {outcome.cell.id}: {outcome.status} in {outcome.seconds:.1f}s", file=sys.stderr)

        try:
            outcomes = run_async(run_cells(cells, inputs, out_dir, prices=prices, budget=budget,
                                           progress=args.progress, on_cell=on_cell))
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume", file=sys.stderr)
            return 130
        payload = write_results(spec, outcomes, prices, out_dir)
        axes = [c for c in payload["columns"] if c in spec.grid]
        plots = write_plots(payload, axes, out_dir)
        write_manifest(spec, args.spec.resolve(), outcomes, inputs, out_dir,
                       budget=budget.describe(prices.currency) if budget else None)
    except MmieError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopped = [o for o in outcomes if o.status.startswith("stopped")]
    failed = [o for o in outcomes if o.status.startswith("failed")]
    print((out_dir / RESULTS_MD).read_text(encoding="utf-8"))
    if stopped:
        ran = len(outcomes) - len(stopped)
        print(f"budget {budget.describe(prices.currency)}: stopped before {stopped[0].cell.id} "
              f"(estimated {stopped[0].plan.tokens if stopped[0].plan else '?'} tokens); {ran} of {len(outcomes)} cells ran")
    for outcome in failed:
        print(f"{outcome.cell.id}: {outcome.status}")
    print(f"results: {out_dir}/results.md, results.csv, results.json; plots: {', '.join(plots) or 'none'}")
    return 1 if failed else 0


def _print_plan(outcomes, prices, format_cost, out_dir: Path) -> int:
    """Prints the plan and writes it to OUT/plan.json."""
    import json

    rows = []
    total_calls = total_tokens = 0
    total_cost = 0.0
    unknown_cost = False
    print(f"{'cell':<60} {'records':>7} {'calls':>6} {'cached':>6} {'~tokens in':>10} {'~tokens out':>11} {'~cost':>10}")
    for outcome in outcomes:
        plan = outcome.plan
        cost = plan.cost(prices)
        unknown_cost |= cost is None
        total_calls += plan.calls
        total_tokens += plan.tokens
        total_cost += cost or 0.0
        more = "+?" if plan.unplanned else ""  # stages whose calls are not known before they run
        cost_text = format_cost(cost, prices.currency) + more
        print(f"{outcome.cell.id:<60} {plan.records:>7} {str(plan.calls) + more:>6} {plan.cached:>6} "
              f"{str(plan.prompt_tokens) + more:>10} {str(plan.completion_tokens) + more:>11} {cost_text:>10}")
        rows.append({"cell": outcome.cell.id, "records": plan.records, "calls": plan.calls, "cached": plan.cached,
                     "prompt_tokens": plan.prompt_tokens, "completion_tokens": plan.completion_tokens,
                     "tokens": plan.tokens, "cost": cost, "exact": plan.exact, "unplanned": plan.unplanned})
        if plan.unplanned:
            print(f"    + calls of {', '.join(plan.unplanned)}: decided while running, not counted")
    cost_text = format_cost(total_cost, prices.currency) + (" (+ unpriced models)" if unknown_cost else "")
    partly = " (+ calls not counted ahead)" if any(o.plan.unplanned for o in outcomes) else ""
    print(f"total: {len(outcomes)} cells, {total_calls} model calls, ~{total_tokens} tokens, ~{cost_text}{partly}")
    print("calls are counted from the requests each planned stage builds, minus those in the cache or made by an "
          "earlier cell; tokens are estimates (~3 characters per input token, max_tokens per answer)")
    (out_dir / "plan.json").write_text(json.dumps({"cells": rows}, indent=2) + "\n", encoding="utf-8")
    return 0
