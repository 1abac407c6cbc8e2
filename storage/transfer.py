"""Moving files between this machine's disk and a store path (local or on an object store).

Some writers and readers only take local files: Lightning's checkpoints and loggers,
`torch.load`, ffmpeg, matplotlib. They work on a local file or directory, and these functions
publish it to the store (or fetch it from there) with the store's atomicity rules:

- a single file appears whole: a local rename, or one PUT on an object store (a multipart upload
  becomes visible only when it completes);
- a directory appears complete: `storage.atomic.atomic_directory` (rename locally, completion
  marker last on an object store).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from storage.atomic import atomic_directory, atomic_file
from storage.location import StorePath, is_remote, store_path


def upload_file(local: str | os.PathLike, destination: str | os.PathLike | StorePath) -> StorePath:
    """Copy the local file to `destination`, which readers see either as before or whole."""
    destination = store_path(destination)
    if is_remote(destination):
        destination.fs.put_file(os.fspath(local), destination.path)
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(destination) as tmp:
        shutil.copyfile(local, tmp)
    return destination


def download_file(source: StorePath, local: str | os.PathLike) -> Path:
    """Copy `source` (local or remote) to the local file `local`; FileNotFoundError names `source`."""
    source, local = store_path(source), Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    if is_remote(source):
        source.fs.get_file(source.path, os.fspath(local))
    else:
        shutil.copyfile(source, local)
    return local


@contextlib.contextmanager
def local_copy(path: str | os.PathLike | StorePath) -> Iterator[Path]:
    """A local path holding the file at `path`: the file itself when local, else a temporary
    download (same name) removed on exit."""
    path = store_path(path)
    if not is_remote(path):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="facetalk-download-") as tmp:
        yield download_file(path, Path(tmp) / path.name)


def upload_tree(local_dir: Path, destination: StorePath) -> list[StorePath]:
    """Write every file under `local_dir` below `destination` (no atomicity of its own)."""
    written = []
    for file in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
        written.append(upload_file(file, destination / file.relative_to(local_dir).as_posix()))
    return written


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike | StorePath) -> Iterator[Path]:
    """A local directory to fill; on a clean exit its content replaces `final` as a whole.

    Local stores write into `final` itself (files there are published one by one by their
    writers, as before); object stores get a temporary local directory, uploaded under the
    completion-marker rule of `atomic_directory` when the block exits cleanly."""
    final = store_path(final)
    if not is_remote(final):
        final.mkdir(parents=True, exist_ok=True)
        yield Path(final)
        return
    with tempfile.TemporaryDirectory(prefix="facetalk-stage-") as tmp:
        yield Path(tmp)
        with atomic_directory(final) as target:
            upload_tree(Path(tmp), target)


def modified_time(path: StorePath) -> float:
    """Seconds since the epoch at which `path` was last written (S3: its LastModified)."""
    path = store_path(path)
    if not is_remote(path):
        return path.stat().st_mtime
    info = path.fs.info(path.path)
    for key in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    raise OSError(f"{path}: the object store reports no modification time ({sorted(info)})")


class FileMirror:
    """Keeps a remote copy of a local directory up to date: `sync()` uploads new and changed files.

    Used for a training run directory: Lightning writes checkpoints and logs locally, and every
    `sync()` makes them visible on the store (each file by one PUT), so a run killed on one
    machine can be resumed from its `last.ckpt` on another."""

    def __init__(self, local_dir: Path, remote_dir: StorePath) -> None:
        self.local_dir, self.remote_dir = Path(local_dir), store_path(remote_dir)
        self._sent: dict[Path, tuple[int, int]] = {}

    def sync(self) -> list[StorePath]:
        sent = []
        for file in sorted(p for p in self.local_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            stat = file.stat()
            version = (stat.st_size, stat.st_mtime_ns)
            if self._sent.get(file) == version:
                continue
            sent.append(upload_file(file, self.remote_dir / file.relative_to(self.local_dir).as_posix()))
            self._sent[file] = version
        return sent
