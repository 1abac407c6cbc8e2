"""The published FaceTalk dataset layout: one folder per `<IDName>_<SequenceName>`.

```
<seq>/audio/cleaned_audio.wav            (any audio file is accepted)
<seq>/audio/wave2vec_audio_feats.pkl     (untrusted pickle, see storage.safe_pickle)
<seq>/nphm_tracking/nphm_expressions/frame_<n>.npz
<seq>/nphm_tracking/nphm_meshes/frame_<n>.ply
<seq>/flame_2023_tracking/flame_2023_template.ply
<seq>/flame_2023_tracking/flame_meshes/frame_<n>.ply
```
Entries whose names start with `_` or `.` are not sequences (the demo keeps `_meta/` there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Partition keys double as folder and store names: letters, digits, '-', '.', '_' only,
# an identity before the first '_', and nothing that walks out of a directory.
_SEQUENCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*_[A-Za-z0-9._\-]+$")
_MAX_NAME_LENGTH = 200

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".aiff", ".aif")
PREFERRED_AUDIO_NAME = "cleaned_audio.wav"


class InvalidSequenceName(ValueError):
    """A folder name that cannot serve as a sequence key."""


class SequenceNotFound(FileNotFoundError):
    """A sequence key with no folder under the dataset root."""


def validate_sequence_key(name: str, folder: Path | None = None) -> str:
    """Return `name` if it is a safe `<IDName>_<SequenceName>` key, else raise naming the folder."""
    where = f"sequence folder {str(folder)!r}" if folder is not None else f"sequence key {name!r}"
    if not name or len(name) > _MAX_NAME_LENGTH:
        raise InvalidSequenceName(f"{where}: name must be 1-{_MAX_NAME_LENGTH} characters")
    if "/" in name or "\\" in name or "\x00" in name:
        raise InvalidSequenceName(f"{where}: name contains a path separator")
    if name in (".", "..") or ".." in name:
        raise InvalidSequenceName(f"{where}: name contains '..' (path traversal)")
    if not _SEQUENCE_NAME.match(name):
        raise InvalidSequenceName(
            f"{where}: expected <IDName>_<SequenceName> using only letters, digits, '-', '.', '_' "
            f"(identity first, before the first '_'), got {name!r}"
        )
    return name


def identity_of(key: str) -> str:
    """The identity a sequence belongs to: the text before the first underscore."""
    return key.split("_", 1)[0]


@dataclass(frozen=True)
class SequenceFolder:
    """Paths of one sequence in the published layout (existence is not implied)."""

    key: str
    path: Path

    @property
    def identity(self) -> str:
        return identity_of(self.key)

    @property
    def audio_dir(self) -> Path:
        return self.path / "audio"

    @property
    def pickled_features(self) -> Path:
        return self.audio_dir / "wave2vec_audio_feats.pkl"

    @property
    def nphm_expressions_dir(self) -> Path:
        return self.path / "nphm_tracking" / "nphm_expressions"

    @property
    def nphm_meshes_dir(self) -> Path:
        return self.path / "nphm_tracking" / "nphm_meshes"

    @property
    def flame_dir(self) -> Path:
        return self.path / "flame_2023_tracking"

    @property
    def flame_template(self) -> Path:
        return self.flame_dir / "flame_2023_template.ply"

    @property
    def flame_meshes_dir(self) -> Path:
        return self.flame_dir / "flame_meshes"

    def audio_file(self) -> Path:
        """`audio/cleaned_audio.wav`, else the only audio file in `audio/`; raise naming what is wrong."""
        preferred = self.audio_dir / PREFERRED_AUDIO_NAME
        if preferred.is_file():
            return preferred
        if not self.audio_dir.is_dir():
            raise FileNotFoundError(f"{self.path}: no audio/ folder")
        candidates = sorted(p for p in self.audio_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not candidates:
            raise FileNotFoundError(
                f"{self.audio_dir}: no audio file (looked for {PREFERRED_AUDIO_NAME} or any of "
                f"{', '.join(AUDIO_EXTENSIONS)})"
            )
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise ValueError(
                f"{self.audio_dir}: several audio files ({names}); keep one or name it {PREFERRED_AUDIO_NAME}"
            )
        return candidates[0]


@dataclass(frozen=True)
class DatasetScan:
    sequences: list[SequenceFolder]
    rejected: list[tuple[str, str]]  # (folder name, reason)


def is_ignored_entry(name: str) -> bool:
    return name.startswith(("_", "."))


def scan_dataset(root: Path) -> DatasetScan:
    """Every sequence folder under `root`, sorted by key; unusable folder names are reported, not fatal."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {str(root)!r} does not exist or is not a directory")
    sequences: list[SequenceFolder] = []
    rejected: list[tuple[str, str]] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if is_ignored_entry(entry.name) or not entry.is_dir():
            continue
        try:
            validate_sequence_key(entry.name, entry)
        except InvalidSequenceName as error:
            rejected.append((entry.name, str(error)))
            continue
        sequences.append(SequenceFolder(entry.name, entry))
    return DatasetScan(sequences, rejected)


def sequence_folder(root: Path, key: str) -> SequenceFolder:
    """The folder of one sequence key, validated and checked to exist."""
    validate_sequence_key(key)
    path = Path(root) / key
    if not path.is_dir():
        raise SequenceNotFound(f"sequence {key!r}: no folder {str(path)!r} under the dataset root")
    return SequenceFolder(key, path)


DEMO_MARKER = "_meta/demo_dataset.json"  # written by ops.demo.dataset into the roots it generates


def is_demo_dataset(root: Path) -> bool:
    """Whether `root` is a generated demo dataset (its marker, or the `_meta/regions.json` of older ones)."""
    root = Path(root)
    return (root / DEMO_MARKER).is_file() or (root / "_meta" / "regions.json").is_file()
