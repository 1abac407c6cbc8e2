"""Publish a directory under its final name only once it is complete.

Writers fill a hidden temporary sibling (`.<name>.tmp-<id>`), then rename it into place.
Replacing an existing directory moves the old one aside (`.<name>.old-<id>`) first; the
window in which neither exists is two renames long, and `recover_interrupted` puts the
old one back if a run was killed inside it. Readers never see a half-written directory.
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

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not glibc: fall back to os.sync()
    _LIBC = None

_TMP = ".tmp-"
_OLD = ".old-"


def _siblings(final: Path, marker: str) -> list[Path]:
    parent = final.parent
    if not parent.is_dir():
        return []
    prefix = f".{final.name}{marker}"
    return [p for p in parent.iterdir() if p.name.startswith(prefix)]


def recover_interrupted(final: Path) -> None:
    """Undo what a killed writer left beside `final`: drop temporaries, restore a moved-aside original."""
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
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `final` when the block exits cleanly."""
    final = Path(final)
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a small file so that readers see either the old or the new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{_TMP}{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
