"""`validate` catches what would otherwise fail (or silently return nothing) on every record."""

from __future__ import annotations

import yaml

from mmie_pipe.cli import main
from mmie_pipe.errors import ExitCode
from mmie_pipe.pipeline import validate_pipeline


def ner(params: dict, stages_before: list | None = None) -> dict:
    return {
        "name": "t",
        "backends": {"llm": {"kind": "fake"}},
        "stages": [*(stages_before or []), {"stage": "extract", "backend": "llm", "params": params}],
    }


def test_missing_template_and_empty_labels_are_reported_together():
    report = validate_pipeline(ner({"template": "no-such-template.v1.jinja", "labels": {}}))
    text = "\n".join(report.problems)
    assert not report.ok
    assert "no-such-template.v1.jinja" in text and "labels" in text and "at least 1 item" in text


def test_missing_template_as_a_path_and_as_a_caption_preset(tmp_path):
    report = validate_pipeline(ner({"template": str(tmp_path / "gone.jinja")}))
    assert not report.ok and "gone.jinja" in report.problems[0]
    caption = {"name": "c", "stages": [{"stage": "caption", "params": {"template": "missing-caption.txt"}}]}
    report = validate_pipeline(caption)
    assert not report.ok and "missing-caption.txt" in report.problems[0]
    assert validate_pipeline({"name": "c", "stages": [{"stage": "caption", "params": {"template": "detailed"}}]}).ok


def test_a_user_template_file_that_exists_is_accepted(tmp_path):
    template = tmp_path / "mine.jinja"
    template.write_text("Tweet: {{ text }}\nEntities:")
    assert validate_pipeline(ner({"template": str(template)})).ok


def test_stage_reading_an_optional_field_written_only_later_is_reported():
    raw = {
        "name": "t",
        "backends": {"llm": {"kind": "fake"}},
        "stages": [
            {"stage": "extract", "backend": "llm", "params": {"context": ["visual_context"]}},
            {"stage": "visual_context"},
        ],
    }
    report = validate_pipeline(raw)
    assert not report.ok and "move that stage earlier" in report.problems[0]
    raw["stages"].reverse()
    assert validate_pipeline(raw).ok


def test_validate_command_exits_2_and_lists_every_problem(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(ner({"template": "nope.jinja", "labels": {}, "shots": -1})))
    assert main(["validate", str(path)]) == ExitCode.REFUSED
    err = capsys.readouterr().err
    assert "nope.jinja" in err and "labels" in err and "shots" in err
