"""Evaluation outputs in the layout the peers' metric scripts read, so anyone can re-score them.

```
<dir>/vertices_npy/<ID>_<SEQ>.npy               ground truth, float32 [T, V*3]
<dir>/result/<ID>_<SEQ>_condition_<ID>.npy      the model's prediction, float32 [T, V*3]
<dir>/templates.pkl                             {<ID>: float32 [V, 3]} neutral template per identity
<dir>/regions/lve.txt, <dir>/regions/fdd.txt    lip / upper-face vertex indices joined by ", "
<dir>/export.json                               subjects, sentences, n_vertices: what to put in the scripts
```
That is BIWI's layout in CodeTalker (`main/cal_metric.py`) and FaceDiffuser
(`evaluation/compute_objective_metrics.py`); their code reads it after setting only the vertex
count and the sentence list (see docs/peer_metrics.md). The prediction is conditioned on its own
identity, as those scripts expect (`_condition_<subject>`).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence

import numpy as np

from storage.location import StorePath


def _save(path: StorePath, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, np.ascontiguousarray(array, dtype=np.float32))


class PeerExport:
    """Writes one model's per-sequence arrays as they are evaluated, then templates and regions."""

    def __init__(self, out_dir: StorePath, lip: Sequence[int] | np.ndarray, upper_face: Sequence[int] | np.ndarray):
        self.dir = out_dir
        self.lip = np.asarray(lip, dtype=np.int64).reshape(-1)
        self.upper_face = np.asarray(upper_face, dtype=np.int64).reshape(-1)
        self.templates: dict[str, np.ndarray] = {}
        self.sequences: list[str] = []
        for name in ("vertices_npy", "result", "regions"):
            (self.dir / name).mkdir(parents=True, exist_ok=True)

    def add(self, key: str, identity: str, template: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> None:
        """truth, prediction: vertices [T, V, 3] of sequence `key` (= <identity>_<sentence>)."""
        if not key.startswith(f"{identity}_"):
            raise ValueError(f"sequence {key!r} is not named <identity>_<sentence> for identity {identity!r}")
        if identity in self.templates and not np.array_equal(self.templates[identity], template):
            # The scripts hold one template per subject; FDD would silently use the wrong one.
            raise ValueError(f"identity {identity!r} has different templates in different sequences ({key!r})")
        self.templates[identity] = np.asarray(template, dtype=np.float32)
        n = len(truth)
        _save(self.dir / "vertices_npy" / f"{key}.npy", np.asarray(truth).reshape(n, -1))
        _save(self.dir / "result" / f"{key}_condition_{identity}.npy", np.asarray(prediction).reshape(n, -1))
        self.sequences.append(key)

    def finish(self) -> None:
        with (self.dir / "templates.pkl").open("wb") as handle:
            pickle.dump(self.templates, handle, protocol=4)
        for name, indices in (("lve", self.lip), ("fdd", self.upper_face)):
            (self.dir / "regions" / f"{name}.txt").write_text(", ".join(str(int(i)) for i in indices))
        n_vertices = next(iter(self.templates.values())).shape[0] if self.templates else 0
        summary = {
            "subjects": sorted(self.templates),
            "sentences": sorted({key.split("_", 1)[1] for key in self.sequences}),
            "sequences": self.sequences,
            "n_vertices": n_vertices,
        }
        (self.dir / "export.json").write_text(json.dumps(summary, indent=1) + "\n")
