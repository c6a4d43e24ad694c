"""Pipeline files: loading, profiles, `--set` overrides, and validation before any model loads.

A pipeline YAML names its backends by role (`llm`, `vlm`...) and lists stages with parameters.
Profiles (package files in `profiles/`) replace backend roles wholesale and may add stage
parameters; `--set a.b.c=value` then edits any value (list items by index or by stage name).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import registry
from .errors import ConfigError
from .records import ARTIFACT_FIELDS, INPUT_FIELDS

PACKAGE_PIPELINES = resources.files("mmie_pipe") / "pipelines"
PACKAGE_PROFILES = resources.files("mmie_pipe") / "profiles"


# Backend settings that change how requests travel, never what a model answers.
OPERATIONAL_BACKEND_KEYS = frozenset({
    "base_url", "base_urls", "api_key_env", "concurrency", "timeout_s", "max_retries", "retry_max_wait_s",
    "startup_timeout_s", "parallel", "threads", "batch_wait_ms", "max_batch", "gpu_memory_utilization",
})


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    backend: str | None = None  # binds the stage's first role
    backends: dict[str, str] = Field(default_factory=dict)  # role -> backend name, for several models
    params: dict[str, Any] = Field(default_factory=dict)


def role_bindings(spec: StageSpec, stage_cls: Any) -> dict[str, str]:
    """role -> backend name for one stage. Raises ConfigError for roles the stage does not have."""
    bound = dict(spec.backends)
    primary = stage_cls.primary_role()
    if spec.backend is not None:
        if primary is None:
            raise ConfigError(f"takes no backend, but names {spec.backend!r}")
        if primary in bound and bound[primary] != spec.backend:
            raise ConfigError(f"`backend: {spec.backend}` and `backends.{primary}: {bound[primary]}` disagree")
        bound[primary] = spec.backend
    unknown = sorted(set(bound) - set(stage_cls.roles))
    if unknown:
        known = ", ".join(stage_cls.roles) or "none"
        raise ConfigError(f"has no role {', '.join(unknown)} (its roles: {known})")
    return bound


class RayOptions(BaseModel):
    """`runtime.ray`: where and how wide a `--executor ray` run goes (docs/distributed.md)."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None  # an existing cluster ("auto", "ray://host:10001"); None: a local one
    replicas: int | None = Field(default=None, ge=1)  # actors; None: one per base URL or GPU, else 1
    cpus_per_replica: float = Field(default=1.0, ge=0)
    gpus_per_replica: float | None = Field(default=None, ge=0)  # None: 1 when a backend runs vLLM in-process


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Records in flight at once; model requests are further bounded by each backend's concurrency.
    batch_size: int = Field(default=32, ge=1)
    cache: bool = True
    cache_path: str | None = None  # a SQLite file (default: the user cache dir) or a redis://host:port/db URL
    seed: int = 0
    # Stop the run (resumably) after this many records in a row failed in the model backend;
    # 0 never stops.
    max_consecutive_failures: int = Field(default=10, ge=0)
    # Where the records run: this process (`local`) or a Ray cluster's actor pool (`ray`).
    executor: Literal["local", "ray"] = "local"
    ray: RayOptions = RayOptions()


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    # Artifact fields the input records must already carry (e.g. precomputed `knowledge`).
    inputs: list[str] = Field(default_factory=list)
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    stages: list[StageSpec] = Field(min_length=1)
    runtime: RuntimeConfig = RuntimeConfig()

    def fingerprint(self) -> str:
        """Hash of what decides the outputs: the seed (it picks few-shot examples) is in; other
        runtime knobs, server addresses, concurrency and retry settings are left out, so a resumed
        run may use another URL or more slots."""
        from .cache import canonical_json

        body = self.model_dump(mode="json", exclude={"runtime", "description"})
        body["seed"] = self.runtime.seed
        body["backends"] = {
            role: {k: v for k, v in spec.items() if k not in OPERATIONAL_BACKEND_KEYS}
            for role, spec in body["backends"].items()
        }
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]


def available_pipelines() -> dict[str, str]:
    return {p.name.removesuffix(".yaml"): str(p) for p in PACKAGE_PIPELINES.iterdir() if p.name.endswith(".yaml")}


def available_profiles() -> dict[str, str]:
    return {p.name.removesuffix(".yaml"): str(p) for p in PACKAGE_PROFILES.iterdir() if p.name.endswith(".yaml")}


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def read_pipeline_source(name_or_path: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise ConfigError(f"pipeline file {name_or_path} does not exist")
        return _read_yaml(path.read_text(encoding="utf-8"), str(path)), str(path)
    shipped = available_pipelines()
    if name_or_path not in shipped:
        raise ConfigError(f"unknown pipeline {name_or_path!r}; shipped: {', '.join(sorted(shipped))}")
    res = PACKAGE_PIPELINES / f"{name_or_path}.yaml"
    return _read_yaml(res.read_text(encoding="utf-8"), f"pipelines/{name_or_path}.yaml"), f"mmie_pipe:{name_or_path}"


_ENV_REF = re.compile(r"\$\{(?P<var>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


def _expand_env(value: Any) -> Any:
    """`${VAR:-default}` in profile strings, for non-secret settings such as server URLs."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m["var"], m["default"] or ""), value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def apply_profile(raw: dict[str, Any], profile: str) -> dict[str, Any]:
    profiles = available_profiles()
    path = Path(profile)
    if path.is_file():
        data = _read_yaml(path.read_text(encoding="utf-8"), str(path))
    elif profile in profiles:
        data = _read_yaml((PACKAGE_PROFILES / f"{profile}.yaml").read_text(encoding="utf-8"), f"profiles/{profile}.yaml")
    else:
        raise ConfigError(f"unknown profile {profile!r}; shipped: {', '.join(sorted(profiles))}")
    unknown = set(data) - {"description", "backends", "stage_params", "runtime"}
    if unknown:
        raise ConfigError(f"profile {profile}: unknown keys {sorted(unknown)}")
    data = _expand_env(data)
    out = copy.deepcopy(raw)
    for role, backend in (data.get("backends") or {}).items():
        if role in out.get("backends", {}):
            out["backends"][role] = backend  # wholesale: fields of another kind would not validate
    for stage_name, params in (data.get("stage_params") or {}).items():
        for spec in out.get("stages", []):
            if isinstance(spec, dict) and registry.base_name(spec.get("stage", "")) == stage_name:
                spec.setdefault("params", {}).update(params)
    out.setdefault("runtime", {}).update(data.get("runtime") or {})
    return out


def _coerce(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    """`stages.extract.params.shots=4`, `backends.llm.model=x`, `runtime.batch_size=8`."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    dotted, value = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    out = copy.deepcopy(raw)
    node: Any = out
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            node_key = _list_index(node, key, dotted)
        elif isinstance(node, dict):
            node_key = key
        else:
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i])} is not a mapping or list")
        if last:
            node[node_key] = _coerce(value)
        else:
            if isinstance(node, dict) and node_key not in node:
                node[node_key] = {}
            node = node[node_key]
    return out


def _list_index(items: list[Any], key: str, dotted: str) -> int:
    if key.isdigit():
        if int(key) >= len(items):
            raise ConfigError(f"--set {dotted}: index {key} out of range")
        return int(key)
    matches = [i for i, item in enumerate(items) if isinstance(item, dict) and registry.base_name(item.get("stage", "")) == key]
    if len(matches) != 1:
        raise ConfigError(f"--set {dotted}: {key!r} names {len(matches)} stages; use an index")
    return matches[0]


@dataclass
class ValidationReport:
    config: PipelineConfig
    source: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def load_pipeline(
    name_or_path: str, *, profile: str | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], str]:
    raw, source = read_pipeline_source(name_or_path)
    if profile:
        raw = apply_profile(raw, profile)
    for assignment in overrides or []:
        raw = apply_override(raw, assignment)
    return raw, source


def validate_pipeline(raw: dict[str, Any], source: str = "<pipeline>") -> ValidationReport:
    """Check structure, stage names, parameters, backends and the read/write chain. Loads nothing."""
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_pretty(exc)}") from exc
    problems: list[str] = []
    for role, spec in config.backends.items():
        kind = spec.get("kind")
        try:
            backend_cls = registry.backends.get(kind or "")
        except KeyError as exc:
            problems.append(f"backends.{role}: {exc.args[0]}")
            continue
        try:
            backend_cls.Config.model_validate(spec)
        except ValidationError as exc:
            problems.append(f"backends.{role}: {_pretty(exc)}")
    unknown_inputs = set(config.inputs) - set(ARTIFACT_FIELDS)
    if unknown_inputs:
        problems.append(f"inputs: unknown fields {sorted(unknown_inputs)} (known: {', '.join(ARTIFACT_FIELDS)})")
    available = set(INPUT_FIELDS) | set(config.inputs)
    for i, spec in enumerate(config.stages):
        where = f"stages[{i}] ({spec.stage})"
        try:
            stage_cls = registry.stages.get(spec.stage)
        except KeyError as exc:
            problems.append(f"{where}: {exc.args[0]}")
            continue
        params = None
        try:
            params = stage_cls.Params.model_validate(spec.params)
        except ValidationError as exc:
            problems.append(f"{where}: bad parameter: {_pretty(exc)}")
        problems += [f"{where}: {p}" for p in _check_roles(spec, stage_cls, params, config)]
        missing = [f for f in stage_cls.reads if f not in available]
        if missing:
            problems.append(
                f"{where}: reads {', '.join(missing)} but no earlier stage writes it "
                f"(add a stage that does, or list it under `inputs` if the input carries it)"
            )
        available |= set(stage_cls.writes)
    problems += _late_optional_reads(config)
    return ValidationReport(config=config, source=source, problems=problems)


def _late_optional_reads(config: PipelineConfig) -> list[str]:
    """A field a stage uses when present but that only a later stage writes is never seen by it:
    the stages are in the wrong order."""
    classes = []
    for spec in config.stages:
        try:
            classes.append(registry.stages.get(spec.stage))
        except KeyError:
            return []  # already reported
    problems = []
    for i, cls in enumerate(classes):
        earlier = set().union(*(c.writes for c in classes[:i])) | set(INPUT_FIELDS) | set(config.inputs)
        for j, later in enumerate(classes[i + 1 :], start=i + 1):
            late = [f for f in cls.optional_reads if f in later.writes and f not in earlier]
            if late:
                problems.append(
                    f"stages[{i}] ({config.stages[i].stage}): uses {', '.join(late)} when present, but only the later "
                    f"stages[{j}] ({config.stages[j].stage}) writes it; move that stage earlier"
                )
    return problems


def _check_roles(spec: StageSpec, stage_cls: Any, params: Any, config: PipelineConfig) -> list[str]:
    """Every required role bound to a defined backend that can do what the role needs."""
    try:
        bound = role_bindings(spec, stage_cls)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    defined = ", ".join(config.backends) or "none defined"
    needs = stage_cls.role_needs(params) if params is not None else {r: role.needs for r, role in stage_cls.roles.items()}
    for role_name, role in stage_cls.roles.items():
        backend_name = bound.get(role_name)
        if backend_name is None:
            if role.required:
                how = "backend" if role_name == stage_cls.primary_role() else f"backends.{role_name}"
                problems.append(f"role {role_name!r} needs a backend (set `{how}:` to one of: {defined})")
            continue
        if backend_name not in config.backends:
            problems.append(f"role {role_name!r}: backend {backend_name!r} is not defined under backends")
            continue
        spec_of_backend = config.backends[backend_name]
        try:
            backend_cls = registry.backends.get(spec_of_backend.get("kind") or "")
            backend_config = backend_cls.Config.model_validate(spec_of_backend)
        except (KeyError, ValidationError):
            continue  # reported with the backend itself
        missing = needs.get(role_name, frozenset()) - backend_cls.capabilities_of(backend_config)
        if missing:
            problems.append(
                f"role {role_name!r} needs {', '.join(sorted(missing))}, which backend {backend_name!r} "
                f"({spec_of_backend.get('kind')}) cannot do"
            )
    return problems


def _pretty(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
