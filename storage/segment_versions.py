"""Which segment versions to keep: the newest N published, the current one, and those models were trained on.

HISTORY (`<store>/segments/HISTORY`, JSON) lists versions most recently published first; a version
not in it (older layouts, a run killed before publishing) counts as older than all of those. Frame
data no longer named by any kept version is removed with the versions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from storage.atomic import atomic_write_bytes, completion_marker
from storage.location import StorePath, is_remote, remove_tree, store_path
from storage.segments import FRAMES, current_version, read_version_attrs, segments_root

HISTORY = "HISTORY"
VERSION_PREFIX = "v-"
TRAINED_ON_FILE = "training_result.json"  # written by models.train beside each published model


def read_history(store_root: str | StorePath) -> list[str]:
    path = segments_root(store_root) / HISTORY
    try:
        return [str(v) for v in json.loads(path.read_text())] if path.is_file() else []
    except (OSError, json.JSONDecodeError):
        return []  # a damaged history only makes pruning treat versions as old; CURRENT still protects


def record_published(store_root: str | StorePath, version: str) -> None:
    """Move `version` to the front of HISTORY."""
    history = [version, *(v for v in read_history(store_root) if v != version)]
    atomic_write_bytes(segments_root(store_root) / HISTORY, json.dumps(history).encode())


def _entries(path: StorePath) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def stored_versions(store_root: str | StorePath) -> list[str]:
    return [name for name in _entries(segments_root(store_root)) if name.startswith(VERSION_PREFIX)]


def trained_on_versions(store_root: str | StorePath) -> set[str]:
    """Segment versions the published models under `<store>/checkpoints/<model>/` were trained on."""
    found: set[str] = set()
    checkpoints = store_path(store_root) / "checkpoints"
    for model in _entries(checkpoints):
        result = checkpoints / model / TRAINED_ON_FILE
        if not result.is_file():
            continue
        try:
            version = json.loads(result.read_text()).get("segments_version")
        except (OSError, json.JSONDecodeError):
            continue
        if version:
            found.add(str(version))
    return found


def _remove(path: StorePath) -> None:
    remove_tree(path)
    if is_remote(path):
        completion_marker(path).unlink(missing_ok=True)


def prune_versions(store_root: str | StorePath, keep: int, protected: Iterable[str] = ()) -> list[str]:
    """Remove versions beyond the newest `keep`, except the current one and `protected`, then frame
    data no kept version uses. Returns what was removed (`<version>` and `frames/<key>`)."""
    if keep < 1:
        raise ValueError(f"keep_versions must be at least 1, got {keep}")
    root = segments_root(store_root)
    stored = stored_versions(store_root)
    history = [v for v in read_history(store_root) if v in stored]
    ordered = history + [v for v in stored if v not in history]
    kept = set(ordered[:keep]) | set(protected) | {current_version(store_root)}
    kept |= trained_on_versions(store_root)
    removed = []
    for version in ordered:
        if version not in kept:
            _remove(root / version)
            removed.append(version)
    used = set()
    for version in stored:
        if version in kept:
            try:
                used.add(str(read_version_attrs(root / version).get("frames", "")))
            except ValueError:
                continue  # an older layout has no shared frames
    for key in _entries(root / FRAMES):
        if key not in used:
            _remove(root / FRAMES / key)
            removed.append(f"{FRAMES}/{key}")
    if removed:
        atomic_write_bytes(root / HISTORY, json.dumps([v for v in read_history(store_root) if v in kept]).encode())
    return removed
