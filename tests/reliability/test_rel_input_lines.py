"""Pathological input lines become an error on their own record; the run and its resume go on."""

from __future__ import annotations

import json

import pytest

from reliability_helpers import read_predictions
from mmie_pipe.errors import ExitCode
from mmie_pipe.record_io import output_line, parse_input_line, read_input

DEEP = 200_000


def deep_array(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int = DEEP) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# (name, raw line, fragment of the expected per-record error)
PATHOLOGICAL = [
    ("deep array as the line", deep_array().encode(), "nested too deeply"),
    ("deep object as the line", deep_object().encode(), "nested too deeply"),
    ("deep array in meta", b'{"id": "x", "text": "Hi Bob", "meta": {"m": ' + deep_array().encode() + b"}}", "nested too deeply"),
    ("deep object in meta", b'{"id": "x", "text": "Hi Bob", "meta": ' + deep_object().encode() + b"}", "nested too deeply"),
    ("moderately deep meta", b'{"id": "x", "text": "Hi Bob", "meta": {"m": ' + deep_array(500).encode() + b"}}", "nested too deeply"),
    ("lone surrogate in text", b'{"id": "x", "text": "Hi \\ud800 Bob"}', "text: contains a lone UTF-16 surrogate"),
    ("lone surrogate in meta", b'{"id": "x", "text": "Hi Bob", "meta": {"k": ["ok", "\\udfff"]}}', "meta.k[1]: contains a lone"),
    ("lone surrogate in a meta key", b'{"id": "x", "text": "Hi Bob", "meta": {"\\udc00": 1}}', "(a key)"),
    ("lone surrogate in the id", b'{"id": "\\ud83d", "text": "Hi Bob"}', "id: contains a lone"),
    ("invalid UTF-8 in text", b'{"id": "x", "text": "caf\xe9 Paris"}', "invalid UTF-8"),
    ("invalid UTF-8 in meta", b'{"id": "x", "text": "Paris", "meta": {"k": "\xff\xfe"}}', "invalid UTF-8"),
    ("whitespace-only text", b'{"id": "x", "text": "   "}', "text is only whitespace"),
    ("whitespace-only text, escaped", b'{"id": "x", "text": "\\t\\n\\u00a0"}', "text is only whitespace"),
    ("BOM past line 1", b'\xef\xbb\xbf{"id": "x", "text": "Hi"}', "malformed JSON"),
    ("NUL bytes", b"\x00\x00\x00\x00", "malformed JSON"),
]


@pytest.mark.parametrize("name,raw,fragment", PATHOLOGICAL, ids=[p[0] for p in PATHOLOGICAL])
def test_each_pathological_line_is_a_record_error(name, raw, fragment):
    item = parse_input_line(2, raw)
    assert item.record is None and fragment in item.error
    json.loads(output_line({"line": 2, "errors": [{"reason": item.error}]}))  # the error itself writes


def test_valid_surrogate_pairs_and_bom_on_line_one_are_accepted(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "Bob \\ud83d\\ude00 in Paris"}\n{"id": "b", "text": "Hi Ann"}\n')
    items = list(read_input(path))
    assert [i.record.text for i in items] == ["Bob \U0001F600 in Paris", "Hi Ann"]


def test_a_run_keeps_valid_records_around_every_bad_line_and_resumes(tmp_path, run_cli):
    good = [json.dumps({"id": f"g{i}", "text": f"Alice visits Paris {i}"}).encode() for i in range(3)]
    body = [good[0]] + [raw for _, raw, _ in PATHOLOGICAL] + [good[1], good[2]]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(body) + b"\n")
    status, out, err = run_cli(source, tmp_path / "run")
    assert status == ExitCode.RECORD_ERRORS and "Traceback" not in err
    rows = read_predictions(tmp_path / "run")
    assert [r["line"] for r in rows] == list(range(1, len(body) + 1))
    assert [r["id"] for r in rows if not r.get("errors")] == ["g0", "g1", "g2"]
    assert all(r["errors"][0]["kind"] == "input" for r in rows if r.get("errors"))
    # The resume reads the same file without trouble and redoes only the (still) bad lines.
    status, out, _ = run_cli(source, tmp_path / "run")
    assert status == ExitCode.RECORD_ERRORS and "3 already done" in out
    assert len(read_predictions(tmp_path / "run")) == len(body)


def test_model_output_with_a_lone_surrogate_is_written_escaped():
    line = output_line({"id": "x", "line": 1, "text": "bad \ud800"})
    assert json.loads(line)["text"] == "bad \ud800" and line.isascii()
