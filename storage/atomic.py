"""Publish a directory under its final name only once it is complete.

Local stores: writers fill a hidden temporary sibling (`.<name>.tmp-<id>`), then rename it into
place. Replacing an existing directory moves the old one aside (`.<name>.old-<id>`) first; the
window in which neither exists is two renames long, and `recover_interrupted` puts the old one
back if a run was killed inside it.

Object stores have no rename: the writer deletes the completion marker (`.<name>.complete`,
beside the prefix) and the old objects, writes under the final prefix, and writes the marker
last. Readers ask `is_published`, which on an object store means "the marker exists"; objects
a killed writer left behind are invisible to them and removed by the next write. Unlike the
local case, the previous version is gone as soon as a replacement starts.

Either way, readers never see a half-written directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from storage.location import StorePath, is_remote, remove_tree, store_path

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not glibc: fall back to os.sync()
    _LIBC = None

_TMP = ".tmp-"
_OLD = ".old-"
_COMPLETE = ".complete"


def _siblings(final: Path, marker: str) -> list[Path]:
    parent = final.parent
    if not parent.is_dir():
        return []
    prefix = f".{final.name}{marker}"
    return [p for p in parent.iterdir() if p.name.startswith(prefix)]


def completion_marker(final: StorePath) -> StorePath:
    """The object whose presence says that `final` on an object store is complete."""
    return final.parent / f".{final.name}{_COMPLETE}"


def is_published(final: StorePath, *contents: str) -> bool:
    """Whether readers may use `final`: locally, it holds `contents` (it appeared whole, by rename);
    on an object store, its completion marker exists."""
    if is_remote(final):
        return completion_marker(final).exists()
    return all((final / name).is_file() for name in contents)


def recover_interrupted(final: StorePath) -> None:
    """Undo what a killed writer left beside `final`: drop temporaries, restore a moved-aside original.

    Nothing to do on an object store: no renames there, and the marker rules out leftovers."""
    if is_remote(final):
        return
    for tmp in _siblings(final, _TMP):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = _siblings(final, _OLD)
    if olds and not final.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, final)
        olds.remove(newest)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: StorePath) -> Iterator[StorePath]:
    """Yield an empty directory whose content replaces `final` when the block exits cleanly."""
    final = store_path(final)
    if is_remote(final):
        with _published_by_marker(final) as target:
            yield target
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(final)
    token = uuid.uuid4().hex[:12]
    tmp = final.parent / f".{final.name}{_TMP}{token}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}{_OLD}{token}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _published_by_marker(final: StorePath) -> Iterator[StorePath]:
    marker = completion_marker(final)
    marker.unlink(missing_ok=True)  # readers stop trusting the old objects before any change
    remove_tree(final)
    try:
        yield final
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the missing marker already hides them
            remove_tree(final)
        raise
    marker.write_bytes(b"complete\n")


class atomic_file:  # noqa: N801 - used like contextlib's context managers
    """A local file that appears under `path` whole or not at all.

    `with atomic_file(path) as tmp:` yields a temporary sibling to write; a clean exit renames it
    over `path`, an exception deletes it. Writers that outlive one block (a video encoder) call
    `commit()` or `discard()` themselves. `suffix` keeps an extension that tools insist on
    (np.savez appends ".npz" otherwise); `durable` fsyncs the data before the rename.
    """

    def __init__(self, path: str | os.PathLike, suffix: str = "", durable: bool = False) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}{_TMP}{uuid.uuid4().hex[:12]}{suffix}")
        self.durable = durable

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> Path:
        try:
            if self.durable:
                with open(self.tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: StorePath, data: bytes) -> None:
    """Write a small file so that readers see either the old or the new content."""
    path = store_path(path)
    if is_remote(path):
        path.write_bytes(data)  # one PUT replaces an object whole
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in _siblings(path, _TMP):  # left by a writer killed before its replace
        stale.unlink(missing_ok=True)
    with atomic_file(path, durable=True) as tmp:
        tmp.write_bytes(data)


def _fsync_tree(root: Path) -> None:
    # Data must be on disk before the rename makes it visible, or a power cut could publish
    # garbage. One syncfs of the filesystem is far cheaper than an fsync per chunk file.
    fd = os.open(root, os.O_RDONLY)
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
