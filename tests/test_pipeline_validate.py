import pytest

from mmie_pipe.cli import main
from mmie_pipe.errors import ConfigError
from mmie_pipe.pipeline import apply_override, apply_profile, load_pipeline, validate_pipeline

GOOD = {
    "name": "t",
    "backends": {"llm": {"kind": "fake"}},
    "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 2}}],
}


def problems(raw):
    return validate_pipeline(raw).problems


def test_good_pipeline_validates():
    assert problems(GOOD) == []


def test_unknown_stage_is_reported_with_known_names():
    raw = {**GOOD, "stages": [{"stage": "extrakt", "backend": "llm"}]}
    (problem,) = problems(raw)
    assert "unknown stage 'extrakt'" in problem and "extract" in problem


def test_bad_parameter_names_the_parameter():
    raw = {**GOOD, "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": -1, "colour": 1}}]}
    (problem,) = problems(raw)
    assert "shots" in problem and "colour" in problem


def test_read_without_writer_is_reported():
    raw = {**GOOD, "stages": [{"stage": "extract", "backend": "llm"}]}
    from mmie_pipe import registry
    from mmie_pipe.stages.base import Stage

    @registry.stages.register("needs_knowledge_test")
    class NeedsKnowledge(Stage):
        name = "needs_knowledge_test"
        reads = ("knowledge",)

        async def process(self, record):
            pass

    raw["stages"] = raw["stages"] + [{"stage": "needs_knowledge_test"}]
    (problem,) = problems(raw)
    assert "reads knowledge but no earlier stage writes it" in problem
    assert problems({**raw, "inputs": ["knowledge"]}) == []


def test_missing_and_undefined_backend():
    assert "needs a backend" in problems({**GOOD, "stages": [{"stage": "extract"}]})[0]
    assert "not defined" in problems({**GOOD, "stages": [{"stage": "extract", "backend": "gpu"}]})[0]
    bad_backend = {**GOOD, "backends": {"llm": {"kind": "openai"}}}
    assert "model" in problems(bad_backend)[0]


def test_structural_errors_raise_config_error():
    with pytest.raises(ConfigError, match="stages"):
        validate_pipeline({"name": "t", "stages": []})


def test_overrides_by_stage_name_and_index():
    raw = apply_override(GOOD, "stages.extract.params.shots=4")
    assert raw["stages"][0]["params"]["shots"] == 4
    raw = apply_override(raw, "stages.0.params.selection=first")
    assert raw["stages"][0]["params"]["selection"] == "first"
    raw = apply_override(raw, "runtime.batch_size=8")
    assert raw["runtime"]["batch_size"] == 8
    with pytest.raises(ConfigError):
        apply_override(raw, "stages.nosuch.params.x=1")
    assert GOOD["stages"][0]["params"]["shots"] == 2  # inputs are not mutated


def test_profile_replaces_backend_and_sets_stage_params(monkeypatch):
    monkeypatch.setenv("MMIE_VLLM_URL", "http://127.0.0.1:9999/v1")
    raw, _ = load_pipeline("ner", profile="vllm")
    assert raw["backends"]["llm"]["kind"] == "openai"
    assert raw["backends"]["llm"]["base_url"] == "http://127.0.0.1:9999/v1"
    assert raw["stages"][0]["params"]["mode"] == "chat_json"
    assert validate_pipeline(raw).ok
    with pytest.raises(ConfigError, match="unknown profile"):
        apply_profile(raw, "nope")


def test_validate_cli(tmp_path, capsys):
    assert main(["validate", "ner"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nbackends: {llm: {kind: fake}}\nstages:\n  - stage: extract\n    backend: llm\n    params: {shots: nine}\n")
    assert main(["validate", str(bad)]) == 2  # ExitCode.REFUSED
    assert "shots" in capsys.readouterr().err
