"""Which parts of a head the lip and upper-face metrics look at: a property of the dataset's topology
and head model, read from `<data root>/_meta/regions.json` or given in the configuration.

```
{"topology": "...", "n_vertices": V,
 "lip": [...], "upper_face": [...],                  vertex sets of the fixed (FLAME) topology
 "upper_lip": [...], "lower_lip": [...],             optional; else `lip` split at its median height
 "expression": {"mouth_dims": [...], "jaw_dim": n}}  NPHM expression-code dims (mouth, jaw opening)
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class EvaluationError(ValueError):
    """Nothing to evaluate, or data that does not fit the model; the message names the store."""


@dataclass(frozen=True)
class CodeRegions:
    """Which expression-code dimensions mean what: `mouth_dims` for the mouth L2, `jaw_dim` (grows as
    the mouth opens) for the mouth opening whose timing the lip-sync measure compares."""

    mouth_dims: tuple[int, ...]
    jaw_dim: int

    @classmethod
    def whole_code(cls, n_dims: int) -> CodeRegions:
        """Without knowledge of the code: every dimension counts as mouth, dimension 0 as the jaw."""
        return cls(tuple(range(n_dims)), 0)

    def checked(self, n_dims: int) -> CodeRegions:
        dims = (*self.mouth_dims, self.jaw_dim)
        if not self.mouth_dims or min(dims) < 0 or max(dims) >= n_dims:
            raise EvaluationError(f"mouth dims {self.mouth_dims} / jaw dim {self.jaw_dim} do not fit a {n_dims}-d code")
        return self


def read_code_regions(path: str | Path) -> CodeRegions | None:
    """The "expression" entry of a regions file, or None when the file or the entry is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get("expression")
    except (OSError, ValueError, AttributeError) as error:
        raise EvaluationError(f"{path}: not a readable regions JSON object ({error})") from error
    if entry is None:
        return None
    try:
        return CodeRegions(tuple(int(d) for d in entry["mouth_dims"]), int(entry["jaw_dim"]))
    except (KeyError, TypeError, ValueError) as error:
        raise EvaluationError(f"{path}: 'expression' needs 'mouth_dims' (list) and 'jaw_dim' (int): {error}") from error


def configured_code_regions(
    path: str | Path, mouth_dims: list[int], jaw_dim: int, notes: list[str]
) -> CodeRegions | None:
    """The regions file's "expression" entry, with `mouth_dims` (non-empty) and `jaw_dim` (>= 0)
    from the run config taking precedence; what is assumed is appended to `notes`."""
    regions = read_code_regions(path)
    if mouth_dims or jaw_dim >= 0:
        base = regions or CodeRegions((), 0)
        regions = CodeRegions(tuple(mouth_dims) or base.mouth_dims, jaw_dim if jaw_dim >= 0 else base.jaw_dim)
        if not regions.mouth_dims:
            notes.append("jaw_dim configured without mouth_dims: the mouth L2 uses the jaw dim only")
            regions = CodeRegions((regions.jaw_dim,), regions.jaw_dim)
    elif regions is None:
        notes.append(
            f"no 'expression' mouth/jaw dims in {path} (nor mouth_dims/jaw_dim in the config): "
            "mouth metrics use the whole code, lip sync dim 0"
        )
    return regions


@dataclass(frozen=True)
class VertexRegions:
    """Vertex index sets of one fixed topology (FLAME, or the demo's)."""

    lip: np.ndarray  # [L] int64
    upper_face: np.ndarray  # [U] int64
    n_vertices: int | None = None  # of the topology, when known: checked against the model
    upper_lip: np.ndarray | None = None  # for the mouth opening; None: `lip` split on the template
    lower_lip: np.ndarray | None = None

    @classmethod
    def from_mapping(cls, raw: dict, source: str = "regions") -> VertexRegions:
        missing = [key for key in ("lip", "upper_face") if key not in raw]
        if missing:
            raise EvaluationError(f"{source}: missing region(s) {missing}; it has {sorted(raw)}")
        lip, upper = (np.asarray(raw[key], dtype=np.int64).reshape(-1) for key in ("lip", "upper_face"))
        if lip.size == 0 or upper.size == 0:
            raise EvaluationError(f"{source}: the 'lip' and 'upper_face' regions must not be empty")
        if ("upper_lip" in raw) != ("lower_lip" in raw):
            raise EvaluationError(f"{source}: give both 'upper_lip' and 'lower_lip', or neither")
        upper_lip, lower_lip = (
            (np.asarray(raw["upper_lip"], np.int64).reshape(-1), np.asarray(raw["lower_lip"], np.int64).reshape(-1))
            if "upper_lip" in raw
            else (None, None)
        )
        n_vertices = int(raw["n_vertices"]) if raw.get("n_vertices") is not None else None
        return cls(lip, upper, n_vertices, upper_lip, lower_lip)


def read_regions(path: str | Path) -> VertexRegions:
    """`<data_root>/_meta/regions.json`: {"topology", "n_vertices", "lip": [...], "upper_face": [...]}."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: region file not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise EvaluationError(f"{path}: expected a JSON object of regions, got {type(raw).__name__}")
    return VertexRegions.from_mapping(raw, source=str(path))
