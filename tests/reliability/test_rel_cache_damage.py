"""A damaged cache entry is recomputed; a damaged or unusable cache file is one clear message."""

from __future__ import annotations

import json
import sqlite3

import pytest

from reliability_helpers import read_predictions, write_posts
from mmie_pipe.cache import GenerationCache
from mmie_pipe.cli import main
from mmie_pipe.errors import ConfigError, ExitCode

pytestmark = pytest.mark.server


def _entries(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT key, value FROM generations").fetchall()


DAMAGED_ENTRIES = ["not json", '{"text": 5}', '["a list"]', "{"]


def test_a_damaged_entry_is_a_miss_and_is_overwritten(tmp_path, run_cli):
    """Four entries, each damaged another way (not JSON, wrong shape, a list, cut short)."""
    cache = tmp_path / "c.sqlite"
    source = write_posts(tmp_path / "in.jsonl", len(DAMAGED_ENTRIES))
    pin = ["--set", f"runtime.cache_path={cache}"]
    assert run_cli(source, tmp_path / "a", *pin)[0] == ExitCode.OK
    good = dict(_entries(cache))
    with sqlite3.connect(cache) as conn:
        for key, damage in zip(sorted(good), DAMAGED_ENTRIES):
            conn.execute("UPDATE generations SET value = ? WHERE key = ?", (damage, key))
    status, out, _ = run_cli(source, tmp_path / "b", *pin)
    assert status == ExitCode.OK and "4 model calls, 0 cache hits" in out
    healed = dict(_entries(cache))
    assert healed.keys() == good.keys()  # the same entries, rewritten with fresh answers
    assert all(isinstance(json.loads(v)["text"], str) for v in healed.values())
    assert not any(r.get("errors") for r in read_predictions(tmp_path / "b"))
    assert "0 model calls, 4 cache hits" in run_cli(source, tmp_path / "c", *pin)[1]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_file_is_one_clear_message_and_cache_commands_work(tmp_path, run_cli, damage, capsys):
    cache = tmp_path / "c.sqlite"
    source = write_posts(tmp_path / "in.jsonl", 2)
    pin = ["--set", f"runtime.cache_path={cache}"]
    assert run_cli(source, tmp_path / "a", *pin)[0] == ExitCode.OK
    GenerationCache(cache).close()
    data = cache.read_bytes()
    cache.write_bytes(b"\x13not a database at all" * 50 if damage == "garbage" else data[: len(data) // 3])
    for side in ("-wal", "-shm"):
        (tmp_path / f"c.sqlite{side}").unlink(missing_ok=True)

    status, _, err = run_cli(source, tmp_path / "b", *pin)
    if status == ExitCode.REFUSED:  # refused before start, naming the file
        assert str(cache) in err and "cache clear" in err and "Traceback" not in err
    else:  # or opened, with unreadable pages served as misses (warned about), never a traceback
        assert status == ExitCode.OK and "Traceback" not in err

    assert main(["cache", "info", "--path", str(cache)]) in (ExitCode.OK, ExitCode.REFUSED)
    assert "Traceback" not in capsys.readouterr().err
    assert main(["cache", "clear", "--path", str(cache)]) == ExitCode.OK
    capsys.readouterr()
    assert main(["cache", "info", "--path", str(cache)]) == ExitCode.OK
    assert '"entries": 0' in capsys.readouterr().out
    status, out, _ = run_cli(source, tmp_path / "c", *pin)
    assert status == ExitCode.OK and "2 model calls" in out


def test_garbage_cache_file_is_refused_by_the_runner_before_any_start(tmp_path):
    cache = tmp_path / "c.sqlite"
    cache.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ConfigError, match="cannot be used"):
        GenerationCache(cache)


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes through file permissions")
def test_read_only_cache_file_is_refused_with_its_path(tmp_path):
    cache = tmp_path / "c.sqlite"
    GenerationCache(cache).close()
    cache.chmod(0o444)
    with pytest.raises(ConfigError, match="not writable"):
        GenerationCache(cache)


def test_cache_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="cannot create the cache folder"):
        GenerationCache(tmp_path / "afile" / "c.sqlite")
