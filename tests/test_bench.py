"""`mmie-pipe bench`: spec validation, prices and budgets (no model), then real cells on real
Twitter-2017 records against the embedded SmolLM2 on llama.cpp: dry-run counts, the budget stop,
resume after an interruption, agreement with `mmie-pipe eval`, and re-runs that call no model."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fault_proxy import FaultProxy
from mmie_pipe.bench.execute import Budget, parse_budget
from mmie_pipe.bench.spec import expand, load_spec
from mmie_pipe.cli import main
from mmie_pipe.errors import ConfigError
from mmie_pipe.pricing import bill, load_prices

NER = {
    "name": "ner-test",
    "backends": {"llm": {"kind": "llama_server", "model": "embedded:smollm2", "base_url": "http://127.0.0.1:9/v1"}},
    "stages": [{"stage": "extract.v1", "backend": "llm",
                "params": {"mode": "fewshot", "shots": 2, "selection": "similar", "max_tokens": 24}}],
}

ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    """The shared data root if present (resolved like `mmie-pipe data`), else a path that is not."""
    from mmie_pipe.data.paths import DataRootNotFound, resolve_data_root

    try:
        return resolve_data_root().path
    except DataRootNotFound:
        return Path("/nonexistent")


def write_spec(tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1", **changes) -> Path:
    pipeline = json.loads(json.dumps(NER))
    pipeline["backends"]["llm"]["base_url"] = base_url
    pipeline["backends"]["llm"]["concurrency"] = changes.pop("concurrency", 4)
    (tmp_path / "ner-test.yaml").write_text(yaml.safe_dump(pipeline))
    spec = {
        "name": "t",
        "task": "mner",
        "data": {"t17": {"dataset": "twitter2017", "split": "test", "sample": 6,
                         "data_root": str(_data_root())}},
        "pipelines": ["ner-test.yaml"],
        "grid": {"shots": [0, 3]},
        "runtime": {"batch_size": 4},
        "output": str(tmp_path / "bench"),
    }
    for key, value in changes.items():
        spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- validation, no model -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"task": "ner"}, "task"),
        ({"data": {"t17": {"dataset": "twitter2017"}}}, "data.t17"),
        ({"data": {"t17": {"dataset": "twitter2099", "split": "test"}}}, "data.t17"),
        ({"data": {"t17": {"file": "x.jsonl", "sample": 0}}}, "data.t17.sample"),
        ({"grid": {"shots": 5}}, "grid.shots"),
        ({"grid": {"shots": [0, 0]}}, "grid.shots"),
        ({"grid": {"temperture": [0.0]}}, "grid.temperture"),
        ({"grid": {"shots": [-1]}}, "shots=-1"),
        ({"pipelines": ["ner-test.yaml", "no-such-pipeline"]}, "pipelines[1]"),
        ({"sample": 3}, "sample"),
        ({"grid": {"set": {"a": "stages.0.params.shots=1"}}}, "grid.set"),
    ],
)
def test_bad_specs_fail_naming_the_field(tmp_path, change, named):
    path = write_spec(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        spec, base = load_spec(path)
        expand(spec, base)
    assert named in str(err.value), str(err.value)


def test_bad_spec_on_the_command_line_exits_2_with_the_field(tmp_path, capsys):
    assert main(["bench", str(write_spec(tmp_path, grid={"shots": "five"})), "--dry-run"]) == 2
    assert "grid.shots" in capsys.readouterr().err


def test_grid_axes_reach_every_stage_that_declares_them(tmp_path):
    spec, base = load_spec(write_spec(tmp_path, grid={"shots": [0, 3], "selection": ["similar", "random"]}))
    cells = expand(spec, base)
    assert [c.id for c in cells] == [
        "ner-test__t17__shots=0__selection=similar", "ner-test__t17__shots=0__selection=random",
        "ner-test__t17__shots=3__selection=similar", "ner-test__t17__shots=3__selection=random"]
    params = cells[3].config.stages[0].params
    assert params["shots"] == 3 and params["selection"] == "random" and params["max_tokens"] == 24
    assert cells[0].config.runtime.batch_size == 4
    only = expand(spec, base, {"shots": "3", "selection": "random"})
    assert [c.id for c in only] == [cells[3].id]


def test_budget_parsing():
    assert parse_budget("50000 tokens") == Budget("tokens", 50000)
    assert parse_budget("50k tokens") == Budget("tokens", 50000)
    assert parse_budget("$2.50") == Budget("money", 2.5)
    assert parse_budget("2.5 USD") == Budget("money", 2.5)
    for bad in ("lots", "50000", "$5 tokens"):
        with pytest.raises(ConfigError):
            parse_budget(bad)


def test_price_table_and_bill(tmp_path):
    table = load_prices()
    assert table.price("gpt-4o-mini").input == 0.15
    assert table.price("gpt-4o-mini-2024-07-18").output == 0.60  # dated snapshot via a pattern
    assert table.price("SmolLM2-135M-Instruct-Q8_0.gguf") is None
    tokens = {"gpt-4o-mini": {"prompt": 1_000_000, "completion": 0, "cached_prompt": 1_000_000, "cached_completion": 2_000_000}}
    assert bill(tokens, table).cost == pytest.approx(0.15)
    assert bill(tokens, table, include_cached=True).cost == pytest.approx(0.30 + 1.20)
    unpriced = bill({"local.gguf": {"prompt": 10, "completion": 5}}, table)
    assert unpriced.cost is None and unpriced.unpriced == ["local.gguf"]
    # A re-run answered from cache spends nothing but is still unpriced, not "$0".
    rerun = bill({"local.gguf": {"prompt": 0, "completion": 0, "cached_prompt": 10, "cached_completion": 5}}, table)
    assert rerun.cost is None and rerun.unpriced == ["local.gguf"]
    assert bill({"gpt-4o-mini": {"prompt": 0, "completion": 0, "cached_prompt": 10}}, table).cost == 0.0
    (tmp_path / "p.yaml").write_text("per_million_tokens: {m: {input: -1, output: 2}}")
    with pytest.raises(ConfigError, match="per_million_tokens.m.input"):
        load_prices(tmp_path / "p.yaml")


# -- real cells on the embedded model -----------------------------------------------------------

def _results(bench: Path) -> dict:
    return json.loads((bench / "results.json").read_text())


def _without_timings(path: Path) -> str:
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        for row in data["cells"]:
            row.pop("wall_s", None)
        return json.dumps(data, sort_keys=True)
    rows = list(csv.DictReader(text.splitlines()))
    for row in rows:
        row.pop("wall_s", None)
    return json.dumps(rows)


@pytest.mark.server
def test_dry_run_counts_are_exact_and_budget_stops_before_a_cell(llama_server, tmp_path, shared_data, capsys):
    with FaultProxy(llama_server.base_url.removesuffix("/v1")) as proxy:
        spec = write_spec(tmp_path, base_url=proxy.base_url + "/v1")
        bench = tmp_path / "bench"
        assert main(["bench", str(spec), "--dry-run"]) == 0
        plan = {p["cell"]: p for p in json.loads((bench / "plan.json").read_text())["cells"]}
        cells = list(plan)
        assert proxy.requests == 0  # a dry run calls no model
        assert [plan[c]["calls"] for c in cells] == [6, 6] and all(plan[c]["exact"] for c in cells)
        assert plan[cells[1]]["tokens"] > plan[cells[0]]["tokens"]  # 3-shot prompts are longer

        # Room for the first cell's estimate only: it runs, the second is refused before it starts.
        budget = plan[cells[0]]["tokens"] + 1
        assert main(["bench", str(spec), "--budget", f"{budget} tokens"]) == 0
        out = capsys.readouterr().out
        rows = {r["cell"]: r for r in _results(bench)["cells"]}
        # Exactly the dry run's count (HTTP retries after a timeout on a loaded machine are not calls).
        assert rows[cells[0]]["model_calls"] == 6 and proxy.requests >= 6
        assert rows[cells[0]]["status"] == "done" and rows[cells[1]]["status"] == "stopped: budget"
        assert rows[cells[1]].get("records") is None and f"stopped before {cells[1]}" in out
        # The rule, on the reported figures: the first cell's estimate fitted, the second's did not.
        spent = rows[cells[0]]["tokens_in"] + rows[cells[0]]["tokens_out"]
        assert plan[cells[0]]["tokens"] <= budget < spent + plan[cells[1]]["tokens"]

        # The dry run now finds the first cell in the cache.
        assert main(["bench", str(spec), "--dry-run"]) == 0
        again = {p["cell"]: p for p in json.loads((bench / "plan.json").read_text())["cells"]}
        assert again[cells[0]]["calls"] == 0 and again[cells[0]]["cached"] == 6 and again[cells[1]]["calls"] == 6

        assert main(["bench", str(spec)]) == 0
        rows = {r["cell"]: r for r in _results(bench)["cells"]}
        assert rows[cells[1]]["model_calls"] == 6 and rows[cells[1]]["status"] == "done"


@pytest.mark.server
def test_bench_resumes_after_interruption_matches_eval_and_reruns_for_free(llama_server, tmp_path, shared_data):
    n = 6
    grid = {"shots": [0, 2], "selection": ["similar", "random"]}
    data = {"t17": {"dataset": "twitter2017", "split": "test", "sample": n, "data_root": str(shared_data)}}
    with FaultProxy(llama_server.base_url.removesuffix("/v1")) as proxy:
        spec = write_spec(tmp_path, base_url=proxy.base_url + "/v1", concurrency=1, grid=grid, data=data,
                          runtime={"batch_size": 2})
        bench = tmp_path / "bench"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-m", "mmie_pipe.cli", "bench", str(spec)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        first_cell = None
        while time.monotonic() < deadline and child.poll() is None:
            found = sorted((bench / "cells").glob("*shots=0__selection=similar*/predictions.jsonl")) if (bench / "cells").exists() else []
            if found and len(found[0].read_text().splitlines()) >= 2:
                first_cell = found[0].parent
                child.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        _, err = child.communicate(timeout=60)
        assert first_cell is not None, f"the bench finished before it could be interrupted: {err[-500:]}"
        assert child.returncode == 130, err[-1000:]
        done_before = len(first_cell.joinpath("predictions.jsonl").read_text().splitlines())
        assert done_before < n and not (bench / "results.json").exists()

        assert main(["bench", str(spec)]) == 0
        # The first cell resumed: its finished records were skipped, only the others were processed.
        attempts = json.loads((first_cell / "manifest.json").read_text())["attempts"]
        assert len(attempts) == 2 and attempts[1]["resumed_skipped"] == done_before
        assert attempts[1]["model_calls"] + attempts[1]["cache_hits"] == n - done_before
        results = _results(bench)
        assert [r["status"] for r in results["cells"]] == ["done"] * 4
        # 0-shot with `random` sends the same requests as with `similar`: all cache hits.
        zero_random = next(r for r in results["cells"] if r["shots"] == 0 and r["selection"] == "random")
        assert zero_random["model_calls"] == 0 and zero_random["cache_hits"] == n

        for row in results["cells"]:
            predictions = bench / row["run_dir"] / "predictions.jsonl"
            lines = [json.loads(x) for x in predictions.read_text().splitlines()]
            assert len(lines) == n and len({x["id"] for x in lines}) == n
            assert main(["eval", "--pred", str(predictions), "--task", "mner", "--out", str(tmp_path / "m.json")]) == 0
            micro = json.loads((tmp_path / "m.json").read_text())["metrics"]["mner"]["micro"]
            assert (row["tp"], row["pred"], row["gold"]) == (micro["tp"], micro["pred"], micro["gold"])
            assert row["f1"] == round(micro["f1"], 4) and row["precision"] == round(micro["precision"], 4)
            assert row["tokens_in"] > 0 and row["tokens_out"] > 0  # cache-served cells show what a fresh run takes

        before = {name: (bench / name).read_text() for name in ("results.md", "results.csv", "results.json", "results_per_type.csv")}
        requests = proxy.requests

    # Unchanged spec, and the server unreachable: nothing is called, the tables come back identical.
    dead = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", concurrency=1, grid=grid, data=data,
                      runtime={"batch_size": 2})
    assert main(["bench", str(dead)]) == 0
    assert proxy.requests == requests
    for name in ("results.csv", "results.json"):
        assert _without_timings(bench / name) == _without_timings_text(before[name], name)
    assert (bench / "results_per_type.csv").read_text() == before["results_per_type.csv"]
    assert [l.rsplit("|", 2)[0] for l in (bench / "results.md").read_text().splitlines()] == \
        [l.rsplit("|", 2)[0] for l in before["results.md"].splitlines()]
    assert (bench / "f1_vs_shots.png").stat().st_size > 5000 and (bench / "f1_vs_cost.png").stat().st_size > 5000
    manifest = json.loads((bench / "bench_manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["models"][0]["file_sha256"] and "packages" in manifest

    # The bench report holds every record of every cell.
    from browser import dump_dom

    assert main(["report", str(bench), "-o", str(tmp_path / "bench.html")]) == 0
    dom = dump_dom(tmp_path / "bench.html")
    assert dom.count('<section class="record') == 4 * n


def _without_timings_text(text: str, name: str) -> str:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmie-bench-{os.getpid()}-{name}"
    tmp.write_text(text)
    try:
        return _without_timings(tmp)
    finally:
        tmp.unlink()


def test_run_reports_tokens_and_cost_per_model(tmp_path, capsys):
    """Accounting plumbing (fake backend: a unit test of the counters, not of a model): tokens of
    calls made and of cache hits are kept per model name; `run` prices them from the table."""
    import asyncio

    from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.commands.run import cost_line
    from mmie_pipe.pipeline import validate_pipeline
    from mmie_pipe.runner import Runner

    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "text": f"Alice met Bob {i} in Paris"}) + "\n" for i in range(3)))
    config = validate_pipeline({"name": "t", "backends": {"llm": {"kind": "fake", "model": "gpt-4o-mini"}},
                                "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 1}}]}).config
    cache = GenerationCache(tmp_path / "c.sqlite")

    def run(out: str) -> dict:
        backend = FakeBackend(FakeConfig(model="gpt-4o-mini", reply="Alice (PER)"))
        summary = asyncio.run(Runner(config, cache=cache, backends={"llm": backend}).run(tmp_path / "in.jsonl", tmp_path / out))
        return summary.as_dict()["tokens_by_model"]

    first = run("a")
    assert first == {"gpt-4o-mini": {"prompt": 30, "completion": 6, "cached_prompt": 0, "cached_completion": 0}}
    second = run("b")
    assert second == {"gpt-4o-mini": {"prompt": 0, "completion": 0, "cached_prompt": 30, "cached_completion": 6}}
    assert cost_line(first, None) == "  tokens: 30 in, 6 out; estimated cost $0.0000"
    (tmp_path / "p.yaml").write_text("per_million_tokens: {gpt-4o-mini: {input: 100000, output: 1000000}}")
    assert cost_line(first, str(tmp_path / "p.yaml")).endswith("estimated cost $9.0000")
    assert "no price for local.gguf" in cost_line({"local.gguf": {"prompt": 1, "completion": 1}}, None)
    # Answered from cache: still unpriced for a local model, $0 for a priced one.
    assert "no price for local.gguf" in cost_line({"local.gguf": {"prompt": 0, "completion": 0, "cached_prompt": 5}}, None)
    assert cost_line(second, None).endswith("estimated cost $0.0000")
    # A resumed run with nothing left asks no model: no cost to claim.
    third = run("b")
    assert third == {} and cost_line(third, None).endswith("estimated cost none (no model was asked anything in this run)")
