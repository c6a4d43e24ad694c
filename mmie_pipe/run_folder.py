"""Guards on a run's output folder, checked before any model or server starts: the folder is
writable, the input does not live inside it, and only one run writes into it at a time."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import ConfigError

LOCK = ".lock"


def check_input_outside(input_path: Path, output_dir: Path) -> None:
    """Refuse an input inside the output folder (by path, `..`, symlink or hard link): the run
    would overwrite it or read its own appended output without end."""
    source = input_path.resolve()
    folder = output_dir.resolve()
    if source == folder or folder in source.parents:
        raise ConfigError(
            f"the input {input_path} is inside the output folder {output_dir} ({source}); "
            "a run never writes where it reads: choose another --output"
        )
    if folder.is_dir():
        inode = _inode(source)
        for written in folder.iterdir():
            if inode is not None and _inode(written) == inode:
                raise ConfigError(
                    f"the input {input_path} is the same file as {written} in the output folder "
                    "(a hard link); choose another --output"
                )


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def check_writable(output_dir: Path, files: list[str]) -> None:
    """One clear line naming the path when the folder or a file the run appends to is not
    writable, instead of a traceback after a server has started."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {output_dir}: {exc.strerror or exc}") from None
    if not output_dir.is_dir():
        raise ConfigError(f"the output path {output_dir} is not a folder")
    probe = output_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"the output folder {output_dir} is not writable: {exc.strerror or exc}") from None
    for name in files:
        path = output_dir / name
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"{path} is not writable; fix its permissions or choose another --output")


class FolderLock:
    """An exclusive advisory lock on the output folder, held for the whole run. The kernel drops
    it when the process dies, so a killed run never leaves a stale lock behind."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"another run (pid {holder}) is writing into {self.path.parent}; wait for it to "
                    "finish or choose another --output"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
