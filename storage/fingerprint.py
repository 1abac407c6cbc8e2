"""Content hashes of inputs, so that re-materializing unchanged data is skipped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def hash_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over (relative name, size, bytes) of each file, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        name = str(path.relative_to(root)) if root is not None else path.name
        digest.update(name.encode())
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def stat_signature(paths: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over (relative name, size, mtime in ns) of each file: a cheap stand-in for `hash_files`.

    Equal signatures mean unchanged files unless something rewrote a file keeping its size and
    nanosecond mtime (the same bet git and make take); a changed signature falls back to content.
    """
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        stat = path.stat()
        name = str(path.relative_to(root)) if root is not None else path.name
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def tree_files(root: Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]


def hash_tree(root: Path) -> str:
    """Hash every regular file below `root` (sorted), e.g. a model-weights directory."""
    root = Path(root)
    return hash_files(tree_files(root), root if root.is_dir() else root.parent)


def hash_values(**values: Any) -> str:
    """Stable hash of JSON-able settings (config, code version, upstream fingerprints)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


SAMPLE_BLOCKS = 8
SAMPLE_BLOCK_BYTES = 64 << 10


def sampled_hash(path: Path, blocks: int = SAMPLE_BLOCKS, block_bytes: int = SAMPLE_BLOCK_BYTES) -> str:
    """A fast content hash of a large file: blake2b over its size and `blocks` evenly spaced blocks
    (the first and the last included), ~512 KiB read whatever the size; small files whole.

    For files that tools rewrite whole (per-frame meshes): a re-tracked frame differs in its size or
    header or in every block. Not a defence against a deliberate edit of a single byte.
    """
    digest = hashlib.blake2b(digest_size=16)
    size = Path(path).stat().st_size
    digest.update(size.to_bytes(8, "little"))
    with open(path, "rb") as handle:
        if size <= blocks * block_bytes:
            digest.update(handle.read())
        else:
            step = (size - block_bytes) / (blocks - 1)
            for k in range(blocks):
                handle.seek(round(k * step))
                digest.update(handle.read(block_bytes))
    return digest.hexdigest()
