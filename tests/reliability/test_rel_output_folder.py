"""The output folder: never written where the run reads, one run at a time, clear refusals."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_helpers import read_predictions, write_posts
from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.cli import main
from mmie_pipe.errors import ConfigError, ExitCode
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.run_folder import FolderLock
from mmie_pipe.runner import Runner

PIPELINE = {
    "name": "t",
    "backends": {"llm": {"kind": "fake"}},
    "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 0}}],
}


def fake_runner(tmp_path, **runtime):
    config = validate_pipeline({**PIPELINE, "runtime": runtime}).config
    backend = FakeBackend(FakeConfig(reply="Alice (PER)"))
    return Runner(config, cache=GenerationCache(tmp_path / "cache.sqlite"), backends={"llm": backend}), backend


def run(runner, source, out, **kw):
    return asyncio.run(runner.run(source, out, progress=False, **kw))


# -- input inside the output folder, by every spelling ------------------------------------------


def _finished_run(tmp_path):
    out = tmp_path / "out"
    run(fake_runner(tmp_path)[0], write_posts(tmp_path / "in.jsonl", 3), out)
    return out


@pytest.mark.parametrize("spelling", ["plain", "dotdot", "relative", "symlink", "hardlink", "folder_symlink"])
def test_input_inside_output_folder_is_refused(tmp_path, monkeypatch, spelling):
    out = _finished_run(tmp_path)
    target = out / "predictions.jsonl"
    before = target.read_bytes()
    output = out
    if spelling == "plain":
        source = target
    elif spelling == "dotdot":
        source = tmp_path / "elsewhere" / ".." / "out" / "predictions.jsonl"
        (tmp_path / "elsewhere").mkdir()
    elif spelling == "relative":
        monkeypatch.chdir(tmp_path)
        source, output = Path("out/predictions.jsonl"), Path("out")
    elif spelling == "symlink":
        source = tmp_path / "link.jsonl"
        source.symlink_to(target)
    elif spelling == "hardlink":
        source = tmp_path / "hard.jsonl"
        os.link(target, source)
    else:  # the output folder is a symlink to the folder holding the input
        (tmp_path / "data").mkdir()
        source = write_posts(tmp_path / "data" / "in.jsonl", 2)
        output = tmp_path / "out-link"
        output.symlink_to(tmp_path / "data")
        before = source.read_bytes()
        target = source
    runner, backend = fake_runner(tmp_path)
    with pytest.raises(ConfigError, match="never writes where it reads|same file"):
        run(runner, source, output)
    assert target.read_bytes() == before and backend.requests == []


def test_overlap_refused_by_the_cli_with_status_2(tmp_path, capsys):
    out = _finished_run(tmp_path)
    status = main(["run", "ner", "--input", str(out / "predictions.jsonl"), "--output", str(out), "--no-progress"])
    assert status == ExitCode.REFUSED
    assert "never writes where it reads" in capsys.readouterr().err


# -- one run per output folder -------------------------------------------------------------------


def test_second_run_in_the_same_process_is_refused_with_the_holder_pid(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 3)
    (tmp_path / "out").mkdir()
    with FolderLock(tmp_path / "out"):
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            run(fake_runner(tmp_path)[0], source, tmp_path / "out")
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    run(fake_runner(tmp_path)[0], source, tmp_path / "out")  # released: the run goes ahead
    assert len(read_predictions(tmp_path / "out")) == 3


HOLDER = """
import sys, time
from pathlib import Path
from mmie_pipe.run_folder import FolderLock
lock = FolderLock(Path(sys.argv[1])); lock.acquire(); print("held", flush=True); time.sleep(60)
"""


def test_lock_held_by_another_process_and_released_when_it_dies(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 2)
    (tmp_path / "out").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            run(fake_runner(tmp_path)[0], source, tmp_path / "out")
    finally:
        holder.kill()
        holder.wait()
    run(fake_runner(tmp_path)[0], source, tmp_path / "out")  # a killed holder leaves no stale lock
    assert [o["line"] for o in read_predictions(tmp_path / "out")] == [1, 2]


# -- unwritable places and a corrupt manifest: one line naming the path, before any start --------


class NeverStarts(FakeBackend):
    started = False

    async def start(self):
        NeverStarts.started = True


def _runner_with_startable_backend(tmp_path):
    config = validate_pipeline(PIPELINE).config
    runner = Runner(config, cache=GenerationCache(tmp_path / "c.sqlite"))
    runner.backends["llm"] = NeverStarts(FakeConfig())
    NeverStarts.started = False
    return runner


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_output_folder(tmp_path, where):
    source = write_posts(tmp_path / "in.jsonl", 1)
    if where == "under_a_file":
        (tmp_path / "afile").write_text("x")
        output = tmp_path / "afile" / "out"
    else:
        output = Path("/proc/mmie-pipe-out")
    runner = _runner_with_startable_backend(tmp_path)
    with pytest.raises(ConfigError, match=str(output.parent if where == "under_a_file" else output).replace("/", ".")):
        run(runner, source, output)
    assert not NeverStarts.started


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_read_only_output_folder(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            run(_runner_with_startable_backend(tmp_path), source, tmp_path / "out")
    finally:
        (tmp_path / "out").chmod(0o755)


@pytest.mark.parametrize("content", [b"{not json", b"\x00\x00\x00", b"[1, 2]", b""])
def test_corrupt_manifest_is_one_clear_error(tmp_path, content):
    source = write_posts(tmp_path / "in.jsonl", 1)
    out = _finished_run(tmp_path)
    (out / "manifest.json").write_bytes(content)
    runner = _runner_with_startable_backend(tmp_path)
    with pytest.raises(ConfigError, match="manifest.json is (unreadable or )?corrupt"):
        run(runner, tmp_path / "in.jsonl", out)
    assert not NeverStarts.started and source.exists()


def test_unusable_home_for_the_default_cache_is_refused_before_start(tmp_path, monkeypatch, capsys):
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.delenv("MMIE_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    source = write_posts(tmp_path / "in.jsonl", 1)
    status = main(["run", "ner", "--input", str(source), "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == ExitCode.REFUSED and "generation cache" in err and str(tmp_path / "home") in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_negative_limit_is_refused(tmp_path, capsys):
    source = write_posts(tmp_path / "in.jsonl", 1)
    with pytest.raises(SystemExit) as exc:
        main(["run", "ner", "--input", str(source), "--limit", "-1"])
    assert exc.value.code == ExitCode.REFUSED and "zero or more" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="zero or more"):
        run(fake_runner(tmp_path)[0], source, tmp_path / "out", limit=-3)


# -- resume covers the input's identity ----------------------------------------------------------


def test_resume_with_another_input_file_is_refused(tmp_path):
    out = _finished_run(tmp_path)
    other = write_posts(tmp_path / "other.jsonl", 3)
    with pytest.raises(ConfigError, match="another input file"):
        run(fake_runner(tmp_path)[0], other, out)


def test_resume_after_the_input_changed_redoes_changed_records_only(tmp_path):
    source = write_posts(tmp_path / "in.jsonl", 4)
    runner, _ = fake_runner(tmp_path)
    run(runner, source, tmp_path / "out")
    lines = source.read_text().splitlines()
    lines[1] = json.dumps({"id": "r2", "text": "Carol flew to Rome"})  # same id, new text
    source.write_text("\n".join(lines[:3]) + "\n")  # and the last line is gone
    runner, backend = fake_runner(tmp_path)
    summary = run(runner, source, tmp_path / "out")
    out = read_predictions(tmp_path / "out")
    assert summary.skipped_done == 2 and len(backend.requests) + summary.calls.cache_hits == 1
    assert [o["line"] for o in out] == [1, 2, 3] and out[1]["text"] == "Carol flew to Rome"
    assert any("input file changed" in n for n in runner.context.notes)


def test_seed_enters_the_resume_fingerprint(tmp_path):
    out = _finished_run(tmp_path)
    with pytest.raises(ConfigError, match="different pipeline configuration"):
        run(fake_runner(tmp_path, seed=7)[0], tmp_path / "in.jsonl", out)
    a = validate_pipeline({**PIPELINE, "runtime": {"seed": 1}}).config.fingerprint()
    b = validate_pipeline({**PIPELINE, "runtime": {"seed": 2, "batch_size": 3}}).config.fingerprint()
    c = validate_pipeline({**PIPELINE, "runtime": {"seed": 1, "batch_size": 3}}).config.fingerprint()
    assert a != b and a == c
