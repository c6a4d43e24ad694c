"""Bench spec files: the grid a bench runs, validated before anything loads.

```yaml
name: mner-twitter2017
task: mner                       # mner | gmner | fmnerg | mre (what `mmie-pipe eval` scores)
data:
  t17-test: {dataset: twitter2017, split: test, sample: 20}   # or {file: posts.jsonl}
pipelines: [ner, {name: ner-chat, pipeline: ner, set: [stages.extract.params.mode=chat_json]}]
grid:
  shots: [0, 5]                  # any stage parameter: set on every stage that declares it
  selection: [similar, random]
  profile: [embedded]            # reserved axes: profile, model, set (named --set lists)
```
Every cell is one pipeline config (pipeline + profile + `--set`s) on one data set. Errors name the
field (`grid.shots`, `data.t17-test.split`, `pipelines[1]`).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import registry
from ..data import DATASETS
from ..errors import ConfigError
from ..metrics import MODES, TASKS
from ..pipeline import PipelineConfig, load_pipeline, validate_pipeline

RESERVED_AXES = ("profile", "model", "set")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    dataset: str | None = None  # a data set of `mmie-pipe data ls`
    split: str | None = None
    file: str | None = None  # or a JSONL file of posts with gold (relative to the spec file)
    captions: str | None = None
    knowledge: str | None = None
    data_root: str | None = None
    sample: int | None = Field(default=None, gt=0)  # a fixed-seed sample of N records (input order kept)

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if (self.dataset is None) == (self.file is None):
            raise ValueError("give exactly one of `dataset` (with `split`) or `file`")
        if self.dataset is not None:
            if self.dataset not in DATASETS:
                raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(sorted(DATASETS))}")
            if not self.split:
                raise ValueError("`split` is required with `dataset`")
        return self


class PipelineEntry(Strict):
    pipeline: str  # shipped name or YAML file (relative to the spec file)
    name: str | None = None  # label in the table (default: the pipeline's name)
    set: list[str] = Field(default_factory=list)  # --set overrides for this pipeline only


class BenchSpec(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    task: Literal[TASKS] = "mner"  # type: ignore[valid-type]
    mode: Literal[MODES] = "offsets"  # type: ignore[valid-type]
    seed: int = 0  # sampling of the data and the pipelines' own seed (runtime.seed)
    data: dict[str, DataSpec] = Field(min_length=1)
    pipelines: list[str | PipelineEntry] = Field(min_length=1)
    grid: dict[str, Any] = Field(default_factory=dict)
    runtime: dict[str, Any] = Field(default_factory=dict)  # e.g. batch_size, applied to every cell
    prices: str | None = None  # price table YAML (default: the shipped OpenAI example)
    output: str | None = None  # bench directory (default: runs/bench-NAME)

    @field_validator("grid")
    @classmethod
    def _grid_lists(cls, grid: dict[str, Any]) -> dict[str, Any]:
        for axis, values in grid.items():
            if axis == "set":
                if not isinstance(values, dict) or not values or not all(
                    isinstance(v, list) and all(isinstance(x, str) for x in v) for v in values.values()
                ):
                    raise ValueError("grid.set: expected a mapping of label -> list of KEY=VALUE overrides")
                continue
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{axis}: expected a non-empty list of values")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"grid.{axis}: values repeat")
        return grid

    def entries(self) -> list[PipelineEntry]:
        return [PipelineEntry(pipeline=p) if isinstance(p, str) else p for p in self.pipelines]


@dataclass
class Cell:
    """One point of the grid: a validated pipeline config on one data set."""

    id: str
    pipeline: str  # label
    data: str  # data set name in the spec
    axes: dict[str, Any]  # axis -> value (set: its label)
    config: PipelineConfig
    source: str
    overrides: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"cell": self.id, "pipeline": self.pipeline, "data": self.data, **self.axes}


def load_spec(path: str | Path) -> tuple[BenchSpec, Path]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench spec {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return BenchSpec.model_validate(raw), path.resolve().parent
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("str", "PipelineEntry")))
            msg = err["msg"].removeprefix("Value error, ")
            # A validator that names the field itself (`grid.shots: ...`) is not prefixed twice.
            problems.append(msg if loc and msg.startswith(f"{loc}.") else f"{loc or '(top)'}: {msg}")
        raise ConfigError(f"{path}: invalid bench spec:\n  " + "\n  ".join(dict.fromkeys(problems))) from exc


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return _UNSAFE.sub("_", text).strip("_") or "none"


def _resolve(path: str, base: Path) -> str:
    p = Path(path)
    if p.suffix in (".yaml", ".yml") and not p.is_absolute() and (base / p).is_file():
        return str(base / p)
    return path


def _stage_params(raw: dict[str, Any]) -> list[set[str]]:
    out = []
    for spec in raw.get("stages") or []:
        try:
            out.append(set(registry.stages.get(spec.get("stage", "")).Params.model_fields))
        except (KeyError, AttributeError):
            out.append(set())
    return out


def expand(spec: BenchSpec, base: Path, only: dict[str, str] | None = None) -> list[Cell]:
    """Every cell of the grid, in spec order, each validated (errors name the spec field)."""
    entries = spec.entries()
    labels = [e.name or Path(e.pipeline).stem for e in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError("pipelines: two entries share a name; give them distinct `name`s")
    param_axes = [a for a in spec.grid if a not in RESERVED_AXES]
    axes_values: list[tuple[str, list[Any]]] = [(a, spec.grid[a]) for a in param_axes]
    for reserved in ("profile", "model"):
        if reserved in spec.grid:
            axes_values.append((reserved, spec.grid[reserved]))
    if "set" in spec.grid:
        axes_values.append(("set", list(spec.grid["set"])))

    # Load each pipeline once (errors name the entry), then check each parameter axis applies somewhere.
    loaded: list[tuple[dict[str, Any], str]] = []
    for i, entry in enumerate(entries):
        if only and "pipeline" in only and only["pipeline"] != labels[i]:
            loaded.append(({}, ""))
            continue
        try:
            loaded.append(load_pipeline(_resolve(entry.pipeline, base)))
        except ConfigError as exc:
            raise ConfigError(f"pipelines[{i}] ({labels[i]}): {exc}") from exc
    selected = [i for i in range(len(entries)) if loaded[i][1]]
    for axis in param_axes:
        if not any(axis in params for i in selected for params in _stage_params(loaded[i][0])):
            names = ", ".join(labels[i] for i in selected)
            raise ConfigError(f"grid.{axis}: no stage of the pipelines ({names}) has a parameter {axis!r}")

    cells: list[Cell] = []
    for i in selected:
        entry, label = entries[i], labels[i]
        stage_params = _stage_params(loaded[i][0])
        for data_name in spec.data:
            for combo in itertools.product(*(values for _, values in axes_values)):
                axes = dict(zip((a for a, _ in axes_values), combo))
                described = {"pipeline": label, "data": data_name, **axes}
                if only and any(_slug(described.get(k)) != _slug(v) for k, v in only.items()):
                    continue
                cells.append(_cell(spec, base, entry, label, data_name, axes, stage_params))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("grid: two cells get the same name; make axis values distinct")
    return cells


def _cell(spec: BenchSpec, base: Path, entry: PipelineEntry, label: str, data_name: str,
          axes: dict[str, Any], stage_params: list[set[str]]) -> Cell:
    overrides = list(entry.set)
    for axis, value in axes.items():
        if axis in RESERVED_AXES:
            continue
        for index, params in enumerate(stage_params):
            if axis in params:
                overrides.append(f"stages.{index}.params.{axis}={json.dumps(value)}")
    if "set" in axes:
        overrides += spec.grid["set"][axes["set"]]
    for key, value in spec.runtime.items():
        overrides.append(f"runtime.{key}={json.dumps(value)}")
    overrides.append(f"runtime.seed={spec.seed}")
    where = ", ".join(f"{k}={v}" for k, v in axes.items())
    where = f"pipelines: {label}" + (f", grid: {where}" if where else "")
    profile = axes.get("profile")
    try:
        raw, source = load_pipeline(_resolve(entry.pipeline, base), profile=_resolve(profile, base) if profile else None)
        if "model" in axes:
            for role in raw.get("backends") or {}:
                raw = _apply(raw, f"backends.{role}.model={json.dumps(axes['model'])}")
        for assignment in overrides:
            raw = _apply(raw, assignment)
        report = validate_pipeline(raw, source)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not report.ok:
        raise ConfigError(f"{where}: invalid pipeline:\n  " + "\n  ".join(report.problems))
    cell_id = "__".join([_slug(label), _slug(data_name), *(f"{a}={_slug(v)}" for a, v in axes.items())])
    return Cell(cell_id, label, data_name, axes, report.config, source, overrides)


def _apply(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    from ..pipeline import apply_override

    return apply_override(raw, assignment)
