"""One Zarr group per sequence: `<store>/sequences/<key>.zarr/<component>/`.

Each component (`audio`, `audio_features`, `nphm`, `flame`, `nphm_meshes`) is written by
exactly one asset through `atomic_directory` (whole, or streamed block by block through
`component_writer` so memory stays bounded), and carries in its attrs the
fingerprint of what it was made from. A component is current when its fingerprint matches;
the asset then skips the work and says `cached`. The root is a local directory or an
object-store URL (see `storage.location`); a component counts as present only once published.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from storage.atomic import atomic_directory, completion_marker, is_published, recover_interrupted
from storage.layout import validate_sequence_key
from storage.location import StorePath, is_remote, make_dirs, remove_tree, store_path
from storage.streaming import GroupWriter
from storage.zarr_io import open_group_readonly, to_json, write_group, zarr_store

COMPONENTS = ("audio", "audio_features", "nphm", "flame", "nphm_meshes")
FINGERPRINT_ATTR = "fingerprint"


class ComponentMissing(FileNotFoundError):
    """A sequence component that has not been materialized (yet)."""


@dataclass(frozen=True)
class ComponentRecord:
    path: StorePath
    attrs: dict[str, Any]


class SequenceStore:
    """The per-sequence Zarr groups under `<root>/sequences/`."""

    def __init__(self, root: str | StorePath):
        self.root = store_path(root)

    @property
    def sequences_dir(self) -> StorePath:
        return self.root / "sequences"

    def group_path(self, key: str) -> StorePath:
        return self.sequences_dir / f"{validate_sequence_key(key)}.zarr"

    def component_path(self, key: str, component: str) -> StorePath:
        if component not in COMPONENTS:
            raise ValueError(f"unknown sequence component {component!r}; expected one of {COMPONENTS}")
        return self.group_path(key) / component

    def _ensure_group(self, key: str) -> StorePath:
        path = self.group_path(key)
        if not (path / "zarr.json").exists():
            make_dirs(path.parent)
            # mode="a" keeps components other assets wrote; the root only holds zarr.json.
            zarr.open_group(zarr_store(path), mode="a", attributes={"sequence": key})
        return path

    def write_component(
        self, key: str, component: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]
    ) -> ComponentRecord:
        """Write a component whole; readers see it only once complete (see `storage.atomic`)."""
        self._ensure_group(key)
        final = self.component_path(key, component)
        attrs = to_json({**attrs, "sequence": key, "component": component})
        with atomic_directory(final) as tmp:
            write_group(tmp, arrays, attrs)
        return ComponentRecord(final, attrs)

    @contextlib.contextmanager
    def component_writer(self, key: str, component: str) -> Iterator[GroupWriter]:
        """Stream a component: `with store.component_writer(key, c) as writer:` then
        `writer.append(name, rows)` as data arrives and fill `writer.attrs`. Published on a clean
        exit, like `write_component`; an exception leaves the previous version in place."""
        self._ensure_group(key)
        final = self.component_path(key, component)
        with atomic_directory(final) as tmp:
            writer = GroupWriter(tmp)
            yield writer
            writer.attrs.update(sequence=key, component=component)
            writer.close()

    def attrs(self, key: str, component: str) -> dict[str, Any] | None:
        """The component's attrs, or None when it is absent."""
        path = self.component_path(key, component)
        recover_interrupted(path)
        if not is_published(path, "zarr.json"):
            return None
        # A group's attrs live in its zarr.json: one small read instead of opening the group.
        metadata = json.loads((path / "zarr.json").read_bytes())
        return dict(metadata.get("attributes", {}))

    def is_current(self, key: str, component: str, fingerprint: str) -> bool:
        attrs = self.attrs(key, component)
        return attrs is not None and attrs.get(FINGERPRINT_ATTR) == fingerprint

    def open_component(self, key: str, component: str) -> zarr.Group:
        path = self.component_path(key, component)
        if not is_published(path, "zarr.json"):
            raise ComponentMissing(
                f"sequence {key!r} has no {component!r} in the store {str(self.root)!r}; "
                f"materialize it first (its asset for partition {key!r})"
            )
        return open_group_readonly(path)

    def read(self, key: str, component: str, name: str) -> np.ndarray:
        group = self.open_component(key, component)
        if name not in group:
            raise KeyError(f"sequence {key!r} component {component!r} has no array {name!r}")
        return group[name][...]

    def sequences_with(self, *components: str) -> list[str]:
        """Keys of stored sequences that have all the given components, sorted."""
        if not self.sequences_dir.is_dir():
            return []
        keys = []
        for entry in sorted(self.sequences_dir.iterdir(), key=lambda entry: entry.name):
            if entry.name.startswith(".") or entry.suffix != ".zarr":
                continue
            if all(is_published(entry / c, "zarr.json") for c in components):
                keys.append(entry.name[: -len(".zarr")])
        return keys

    def remove(self, key: str) -> bool:
        """Delete one sequence's group; True when there was one.

        Locally the group is first renamed aside (`.<key>.zarr.removing-<id>`, a name no reader
        lists and `recover_interrupted` does not restore), so readers see it whole or not at all even
        if the delete is killed; leftovers of a killed removal go with the next one. Object stores
        have no rename: the completion markers go first, which hides the components from readers.
        """
        group = self.group_path(key)
        if is_remote(group):
            existed = group.exists()
            for component in COMPONENTS:
                completion_marker(group / component).unlink(missing_ok=True)
            remove_tree(group)
            return existed
        existed = group.exists()
        if existed:
            os.rename(group, group.parent / f".{group.name}{_REMOVING}{uuid.uuid4().hex[:12]}")
        if self.sequences_dir.is_dir():
            for leftover in self.sequences_dir.glob(f".{group.name}{_REMOVING}*"):
                shutil.rmtree(leftover, ignore_errors=True)
        return existed


_REMOVING = ".removing-"
