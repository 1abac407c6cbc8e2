"""The quality gate on hand-made tables: the model must beat every audio-free baseline on the lip
metrics; margins are reported; every metric a baseline wins is listed."""

import math

import pytest

from ops.evaluation.gate import baseline_wins, compare, family_gate, lip_gate
from ops.evaluation.report import metrics_markdown


def _flame(model_lve: float, model_sync: float, mean_lve: float = 3.0, mve_model: float = 1.0) -> dict:
    return {
        "model": {"lve": model_lve, "lip_sync": model_sync, "mve": mve_model, "fdd_abs": 0.1, "diversity": 0.5},
        "null_condition": {"lve": 4.0, "lip_sync": 0.05, "mve": 2.0, "fdd_abs": 0.2},
        "mean_offsets": {"lve": mean_lve, "lip_sync": 0.0, "mve": 0.5, "fdd_abs": 0.3},
        "zero_offsets": {"lve": 5.0, "lip_sync": 0.0, "mve": 2.5, "fdd_abs": 0.4},
        "ground_truth": {"lip_sync": 1.0},
    }


def test_passes_only_when_every_baseline_loses_on_every_lip_metric():
    verdict = family_gate("flame", _flame(2.0, 0.6))
    assert verdict.passed and len(verdict.comparisons) == 6 and not verdict.lost
    assert verdict.margins()["lve"]["mean_offsets"] == pytest.approx(1 / 3, abs=1e-4)  # (3 - 2) / 3
    assert verdict.margins()["lip_sync"]["null_condition"] == pytest.approx(0.55)  # absolute for correlations
    assert verdict.explanation().startswith("passed")


def test_losing_to_the_mean_alone_fails_and_says_so():
    verdict = family_gate("flame", _flame(2.0, 0.6, mean_lve=1.5))  # beats the null condition, not the mean
    assert not verdict.passed
    assert [(c.metric, c.baseline) for c in verdict.lost] == [("lve", "mean_offsets")]
    assert "lve: model 2 LOSES to mean_offsets 1.5 (margin -33.3%)" in verdict.explanation()


def test_a_constant_mouth_is_beaten_only_by_a_positive_correlation():
    assert not family_gate("flame", _flame(2.0, 0.0)).passed  # a tie is not a win
    assert not family_gate("flame", _flame(2.0, -0.2)).passed


def test_nan_and_missing_rows_fail():
    assert not family_gate("flame", _flame(float("nan"), 0.6)).passed
    table = _flame(2.0, 0.6)
    del table["zero_offsets"]
    verdict = family_gate("flame", table)
    assert not verdict.passed and "baseline 'zero_offsets' has no 'lve'" in verdict.explanation()
    assert not lip_gate({}, ("lve",), ("null_condition",)).passed


def test_nphm_gate_uses_the_mouth_l2_and_lip_sync_against_three_baselines():
    row = {"expression_l2": 1.0, "expression_l2_mouth": 0.3, "lip_sync": 0.5}
    baseline = {"expression_l2": 0.9, "expression_l2_mouth": 0.4, "lip_sync": 0.0}
    table = {"model": row, "null_condition": baseline, "mean_code": baseline, "zero_code": baseline}
    verdict = family_gate("nphm", table)
    assert verdict.passed  # expression_l2 (all dims) is not a lip metric
    wins = baseline_wins("nphm", table)
    assert len(wins) == 3 and all("expression_l2:" in w and "LOSES" in w for w in wins)


def test_baseline_wins_lists_every_metric_a_baseline_wins():
    wins = baseline_wins("flame", _flame(2.0, 0.6, mve_model=1.0))
    assert wins == ["flame: mve: model 1 LOSES to mean_offsets 0.5 (margin -100.0%)"]


def test_compare_directions():
    assert compare("lve", "b", 1.0, 2.0).margin == pytest.approx(0.5)
    assert compare("lip_sync", "b", 0.7, 0.2).margin == pytest.approx(0.5)
    assert compare("lve", "b", 0.0, 0.0).margin == -math.inf
    with pytest.raises(ValueError, match="no better direction"):
        compare("diversity", "b", 1.0, 2.0)


def test_the_markdown_table_says_when_a_baseline_wins():
    table = _flame(2.0, 0.6, mve_model=1.0)
    table["data"] = {"n_sequences": 4.0, "n_frames": 384.0}
    markdown = metrics_markdown({"flame": table}, {"flame": baseline_wins("flame", table)})
    assert "**flame**: 4 whole test sequences, 384 frames, the same for every row" in markdown
    assert "| model | " in markdown and markdown.index("| model |") < markdown.index("| null_condition |")
    assert "An audio-free baseline wins on 1 comparison(s)" in markdown
    assert "- mve: model 1 LOSES to mean_offsets 0.5 (margin -100.0%)" in markdown
    table["model"]["mve"] = 0.1
    clean = metrics_markdown({"flame": table}, {"flame": baseline_wins("flame", table)})
    assert "beats every audio-free baseline on every comparable metric" in clean
