import asyncio
import json

import pytest

from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.errors import ModelCallError
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.runner import Runner, StrictModeError

PIPELINE = {
    "name": "t",
    "backends": {"llm": {"kind": "fake"}},
    # TF-IDF selection is instant; sentence embeddings take longer than the fake model's replies.
    "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 2, "similarity": "tfidf"}}],
    "runtime": {"batch_size": 8, "max_consecutive_failures": 0},  # the budget has its own tests
}


def reply_with_capitalised_words(request):
    tweet = request.prompt.rsplit("Tweet: ", 1)[1].split("\n")[0]
    return "; ".join(f"{w} (PER)" for w in tweet.split() if w[:1].isupper()) or "none"


def make_runner(tmp_path, responder=reply_with_capitalised_words, **config):
    backend = FakeBackend(FakeConfig(**config), responder=responder)
    cfg = validate_pipeline(PIPELINE).config
    return Runner(cfg, cache=GenerationCache(tmp_path / "cache.sqlite"), backends={"llm": backend}), backend


def write_input(path, n, bad_lines=()):
    with path.open("w") as f:
        for i in range(1, n + 1):
            if i in bad_lines:
                f.write("{not json\n")
            else:
                f.write(json.dumps({"id": f"r{i}", "text": f"Message {i} from Alice to Bob{i}"}) + "\n")


def read_output(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_outputs_in_input_order_with_per_record_errors(tmp_path):
    write_input(tmp_path / "in.jsonl", 50, bad_lines={7, 31})
    runner, backend = make_runner(tmp_path, delay_s=0.002)
    summary = asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    out = read_output(tmp_path / "run")
    assert [o["line"] for o in out] == list(range(1, 51))
    assert summary.errors == 2 and summary.ok == 48
    assert "malformed JSON" in out[6]["errors"][0]["reason"] and out[6]["errors"][0]["line"] == 7
    assert [e["text"] for e in out[0]["entities"]] == ["Message", "Alice", "Bob1"]
    assert backend.peak_in_flight > 1  # records were processed concurrently


def test_backend_concurrency_bound_is_respected(tmp_path):
    write_input(tmp_path / "in.jsonl", 40)
    runner, backend = make_runner(tmp_path, delay_s=0.01, concurrency=3)
    asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    assert backend.peak_in_flight == 3


def test_rerun_makes_no_calls_and_counts_zero_tokens(tmp_path):
    write_input(tmp_path / "in.jsonl", 20)
    runner, backend = make_runner(tmp_path)
    first = asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run1"))
    assert first.calls.calls == 20
    runner2, backend2 = make_runner(tmp_path)
    second = asyncio.run(runner2.run(tmp_path / "in.jsonl", tmp_path / "run2"))
    assert backend2.requests == [] and second.calls.cache_hits == 20
    assert second.calls.usage.prompt_tokens == 0
    assert read_output(tmp_path / "run1") == read_output(tmp_path / "run2")


def test_resume_skips_finished_and_retries_failed(tmp_path):
    write_input(tmp_path / "in.jsonl", 30)
    failing = {"on": True}

    def flaky(request):
        if failing["on"] and "Message 1" in request.prompt.rsplit("Tweet: ", 1)[1]:
            raise ModelCallError("HTTP 500 from model server after 3 attempt(s)", attempts=3, status=500)
        return reply_with_capitalised_words(request)

    runner, _ = make_runner(tmp_path, responder=flaky)
    summary = asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    failed = {o["line"] for o in read_output(tmp_path / "run") if o.get("errors")}
    assert failed == {1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19} and summary.errors == 11
    assert all(o["errors"][0]["kind"] == "model" for o in read_output(tmp_path / "run") if o.get("errors"))

    failing["on"] = False
    runner2, backend2 = make_runner(tmp_path, responder=flaky)
    summary2 = asyncio.run(runner2.run(tmp_path / "in.jsonl", tmp_path / "run"))
    assert summary2.skipped_done == 19 and len(backend2.requests) == 11
    out = read_output(tmp_path / "run")
    assert [o["line"] for o in out] == list(range(1, 31)) and not any(o.get("errors") for o in out)


def test_a_finished_run_resumed_starts_no_backend(tmp_path):
    write_input(tmp_path / "in.jsonl", 6)
    runner, _ = make_runner(tmp_path)
    asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    before = (tmp_path / "run" / "predictions.jsonl").read_bytes()

    runner2, backend2 = make_runner(tmp_path)

    async def refuse_to_start():  # starting would spawn a llama-server, load a GPU engine...
        raise AssertionError("the backends were started with nothing left to do")

    runner2.start = refuse_to_start
    summary = asyncio.run(runner2.run(tmp_path / "in.jsonl", tmp_path / "run"))
    assert summary.skipped_done == 6 and summary.records == 0 and not backend2.requests
    assert (tmp_path / "run" / "predictions.jsonl").read_bytes() == before


def test_interrupted_write_is_redone(tmp_path):
    write_input(tmp_path / "in.jsonl", 5)
    runner, _ = make_runner(tmp_path)
    asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    (tmp_path / "run" / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    runner2, _ = make_runner(tmp_path)
    summary = asyncio.run(runner2.run(tmp_path / "in.jsonl", tmp_path / "run"))
    assert summary.skipped_done == 3
    assert [o["line"] for o in read_output(tmp_path / "run")] == [1, 2, 3, 4, 5]


def test_strict_stops_at_first_error(tmp_path):
    write_input(tmp_path / "in.jsonl", 10, bad_lines={4})
    runner, _ = make_runner(tmp_path)
    with pytest.raises(StrictModeError, match="line 4"):
        asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run", strict=True))
    assert len(read_output(tmp_path / "run")) == 4


def test_other_config_in_same_run_dir_is_refused(tmp_path):
    from mmie_pipe.errors import ConfigError

    write_input(tmp_path / "in.jsonl", 3)
    runner, _ = make_runner(tmp_path)
    asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    other = validate_pipeline({**PIPELINE, "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 3}}]}).config
    backend = FakeBackend(FakeConfig(), responder=reply_with_capitalised_words)
    with pytest.raises(ConfigError, match="different pipeline configuration"):
        asyncio.run(Runner(other, backends={"llm": backend}).run(tmp_path / "in.jsonl", tmp_path / "run"))


def test_manifest_has_identity_versions_timings(tmp_path):
    write_input(tmp_path / "in.jsonl", 3)
    runner, _ = make_runner(tmp_path, model="tiny-fake")
    asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["backends"]["llm"]["identity"] == {"name": "tiny-fake"}
    assert manifest["packages"]["pydantic"]
    assert manifest["attempts"][-1]["records"] == 3 and manifest["attempts"][-1]["model_calls"] == 3
    assert manifest["stages"][0]["stage"] == "extract.v1"


def test_eval_scores_a_run_with_input_errors(tmp_path, capsys):
    from mmie_pipe.cli import main

    rows = [
        {"id": "a", "text": "Alice meets Bob", "gold": {"entities": [{"text": "Alice", "start": 0, "end": 5, "type": "PER"}]}},
        {"id": "b"},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    runner, _ = make_runner(tmp_path)
    asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    assert main(["eval", "--pred", str(tmp_path / "run" / "predictions.jsonl"), "--task", "mner"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["metrics"]["mner"]["micro"]["tp"] == 1
    assert metrics["counts"]["predictions_without_gold"] == 2  # the two unreadable input lines


def test_backend_that_cannot_start_fails_cleanly_and_is_recorded(tmp_path):
    from mmie_pipe.errors import MmieError

    class Broken(FakeBackend):
        async def start(self):
            raise MmieError("server did not come up")

    write_input(tmp_path / "in.jsonl", 2)
    cfg = validate_pipeline(PIPELINE).config
    runner = Runner(cfg, cache=GenerationCache(tmp_path / "c.sqlite"))
    runner.backends["llm"] = Broken(FakeConfig())
    with pytest.raises(MmieError, match="did not come up"):
        asyncio.run(runner.run(tmp_path / "in.jsonl", tmp_path / "run"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["attempts"][-1]["failed_to_start"] is True
