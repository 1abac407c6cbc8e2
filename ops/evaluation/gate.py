"""The quality gate: the model must beat every audio-free baseline on the lip metrics.

A baseline that never hears the audio (the same network sampled without it, the train-split mean,
the neutral face) can still score well on L2 metrics: the mean minimizes the expected squared error
of any sampler. So a model that does not beat *each* of them on the lip metrics has not shown that it
uses the audio, and the blocking check fails. Every other metric on which a baseline wins is listed
too, so a table never looks better than it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Table = dict[str, dict[str, float]]

# Direction of each comparable metric. FDD is compared by its absolute value (0 is ideal).
LOWER_IS_BETTER = ("lve", "lve_mm", "mve", "fdd_abs", "expression_l2", "expression_l2_mouth")
HIGHER_IS_BETTER = ("lip_sync", "audio_energy_sync")
LIP_METRICS = {"nphm": ("expression_l2_mouth", "lip_sync"), "flame": ("lve", "lip_sync")}
BASELINES = {
    "nphm": ("null_condition", "mean_code", "zero_code"),
    "flame": ("null_condition", "mean_offsets", "zero_offsets"),
}


@dataclass(frozen=True)
class Comparison:
    metric: str
    baseline: str
    model: float
    theirs: float
    # How much better the model is: relative ((theirs - model) / theirs) for errors, absolute
    # (model - theirs) for correlations, whose baselines sit near 0. Positive: the model wins.
    margin: float

    @property
    def model_wins(self) -> bool:
        return bool(np.isfinite(self.margin) and self.margin > 0)

    def describe(self) -> str:
        relation = "beats" if self.model_wins else "LOSES to"
        kind = "%" if self.metric in LOWER_IS_BETTER else ""
        margin = f"{100 * self.margin:+.1f}%" if kind else f"{self.margin:+.3f}"
        return f"{self.metric}: model {self.model:.4g} {relation} {self.baseline} {self.theirs:.4g} (margin {margin})"


def compare(metric: str, baseline: str, model: float, theirs: float) -> Comparison:
    if metric in LOWER_IS_BETTER:
        margin = (theirs - model) / abs(theirs) if theirs != 0 else (np.inf if model < theirs else -np.inf)
    elif metric in HIGHER_IS_BETTER:
        margin = model - theirs
    else:
        raise ValueError(f"{metric!r} has no better direction; known: {LOWER_IS_BETTER + HIGHER_IS_BETTER}")
    if not (np.isfinite(model) and np.isfinite(theirs)):
        margin = float("nan")
    return Comparison(metric, baseline, float(model), float(theirs), float(margin))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    comparisons: tuple[Comparison, ...]  # lip metrics x baselines
    problems: tuple[str, ...] = ()  # missing rows or metrics

    @property
    def lost(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.model_wins]

    def explanation(self) -> str:
        head = "passed" if self.passed else "FAILED"
        lines = [*self.problems, *(c.describe() for c in self.comparisons)]
        return f"{head}: " + "; ".join(lines)

    def margins(self) -> dict[str, dict[str, float]]:
        """{metric: {baseline: margin}}, for metadata."""
        out: dict[str, dict[str, float]] = {}
        for c in self.comparisons:
            out.setdefault(c.metric, {})[c.baseline] = round(c.margin, 4) if np.isfinite(c.margin) else str(c.margin)
        return out


def lip_gate(table: Table, lip_metrics: Sequence[str], baselines: Sequence[str]) -> Verdict:
    """Passes when the model row beats every baseline row on every lip metric (ties lose)."""
    model = table.get("model")
    if not model:
        return Verdict(False, (), ("no 'model' row in the metrics table",))
    comparisons, problems = [], []
    for metric in lip_metrics:
        if metric not in model:
            problems.append(f"the model row has no {metric!r}")
            continue
        for baseline in baselines:
            row = table.get(baseline)
            if row is None or metric not in row:
                problems.append(f"baseline {baseline!r} has no {metric!r}")
                continue
            comparisons.append(compare(metric, baseline, model[metric], row[metric]))
    passed = not problems and bool(comparisons) and all(c.model_wins for c in comparisons)
    return Verdict(passed, tuple(comparisons), tuple(problems))


def family_gate(family: str, table: Table) -> Verdict:
    """The gate of one model family ("nphm" or "flame") with its lip metrics and baselines."""
    return lip_gate(table, LIP_METRICS[family], BASELINES[family])


def baseline_wins(family: str, table: Table) -> list[str]:
    """Every comparable metric on which an audio-free baseline is at least as good as the model."""
    model = table.get("model", {})
    notes = []
    for baseline in BASELINES[family]:
        for metric in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER):
            if metric in model and metric in table.get(baseline, {}):
                comparison = compare(metric, baseline, model[metric], table[baseline][metric])
                if not comparison.model_wins:
                    notes.append(f"{family}: {comparison.describe()}")
    return notes
