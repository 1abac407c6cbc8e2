"""Listing and numbering of per-frame tracking files (`frame_<n><suffix>`).

Tracking tools write one file per video frame. The numbers may be zero-padded or not and need
not start at 0, but a sequence must be complete: a gap would silently shift every later frame
against the audio, so it is an error, as are two files claiming the same frame number.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ops.tracking.errors import TrackingError

__all__ = ["TrackingError", "list_frames", "require_matching_frames"]

_MAX_LISTED = 10  # how many missing numbers / duplicates an error message spells out


def list_frames(folder: str | Path, suffix: str) -> list[tuple[int, Path]]:
    """Return `(frame_number, path)` for every `frame_<n><suffix>` file in `folder`, sorted by n.

    Files that do not match the pattern are ignored; hidden files (`.frame_1.npz`, macOS `._*`)
    and editor/temp leftovers (`~...`) never count even if the rest of the name matches.
    Raises TrackingError when the folder is missing, holds no frames, has two files with the
    same number (`frame_1.npz` and `frame_001.npz`) or has gaps between the first and last number.
    """
    folder = Path(folder)
    pattern = re.compile(r"frame_(\d+)" + re.escape(suffix))
    if not folder.is_dir():
        problem = "is not a directory" if folder.exists() else "folder is missing"
        raise TrackingError(folder, f"{problem} (expected frame_<n>{suffix} files)")

    by_number: dict[int, list[str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith((".", "~")):
                continue
            match = pattern.fullmatch(name)
            if match is None or not entry.is_file():
                continue
            by_number.setdefault(int(match.group(1)), []).append(name)

    if not by_number:
        raise TrackingError(folder, f"no frame_<n>{suffix} files found")

    duplicates = sorted((n, sorted(names)) for n, names in by_number.items() if len(names) > 1)
    if duplicates:
        shown = "; ".join(" and ".join(names) for _, names in duplicates[:_MAX_LISTED])
        more = f" (+{len(duplicates) - _MAX_LISTED} more)" if len(duplicates) > _MAX_LISTED else ""
        raise TrackingError(folder, f"duplicate frame numbers: {shown}{more}")

    numbers = sorted(by_number)
    first, last = numbers[0], numbers[-1]
    if last - first + 1 != len(numbers):
        missing = _first_missing(numbers, _MAX_LISTED)
        n_missing = last - first + 1 - len(numbers)
        raise TrackingError(
            folder,
            f"gap in frame numbers: {n_missing} missing between frame {first} and frame {last}, "
            f"first missing: {', '.join(map(str, missing))}",
        )
    return [(n, folder / by_number[n][0]) for n in numbers]


def require_matching_frames(
    folder: str | Path,
    frame_numbers: Sequence[int],
    reference_numbers: Sequence[int],
    reference_name: str,
) -> None:
    """Raise TrackingError unless `folder`'s frame numbers equal the reference's exactly.

    Used where two tracking outputs must describe the same frames (e.g. NPHM meshes vs
    NPHM expression codes); the message gives both ranges and the first disagreement.
    """
    ours, theirs = list(map(int, frame_numbers)), list(map(int, reference_numbers))
    if ours == theirs:
        return
    only_ours = sorted(set(ours) - set(theirs))[:_MAX_LISTED]
    only_theirs = sorted(set(theirs) - set(ours))[:_MAX_LISTED]
    detail = []
    if only_ours:
        detail.append(f"frames not in {reference_name}: {', '.join(map(str, only_ours))}")
    if only_theirs:
        detail.append(f"frames missing here: {', '.join(map(str, only_theirs))}")
    raise TrackingError(
        folder,
        f"frames {_describe_range(ours)} do not match {reference_name} frames "
        f"{_describe_range(theirs)}" + (f" ({'; '.join(detail)})" if detail else ""),
    )


def _first_missing(sorted_numbers: list[int], limit: int) -> list[int]:
    missing: list[int] = []
    for previous, current in itertools.pairwise(sorted_numbers):
        missing.extend(range(previous + 1, min(current, previous + 1 + limit - len(missing))))
        if len(missing) >= limit:
            break
    return missing


def _describe_range(numbers: list[int]) -> str:
    if not numbers:
        return "(none)"
    return f"{numbers[0]}..{numbers[-1]} ({len(numbers)} frames)"
