"""Fitting an NPHM to the analytic head (ops/geometry/fitted_head.py, bench/fit_nphm_head.py), at small scale."""

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from models.heads.analytic import AnalyticHead
from models.heads.nphm import load_nphm
from ops.geometry.fitted_head import FitSettings, anchor_layout, expression_ranges, fit_nphm
from tests.test_nphm import TINY


@pytest.fixture(autouse=True)
def one_thread():
    # Hundreds of small per-member products: one thread is many times faster on a busy 2-core box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_anchor_layout_pairs_are_mirror_images_and_the_rest_on_the_midline():
    rng = np.random.default_rng(0)
    surface = rng.normal(size=(3000, 3))
    surface /= np.linalg.norm(surface, axis=1, keepdims=True) * 3
    anchors = anchor_layout(surface, n_anchors=39, n_pairs=16)
    assert anchors.shape == (39, 3)
    pairs = anchors[:32].reshape(16, 2, 3)
    assert np.allclose(pairs[:, 1], pairs[:, 0] * [-1, 1, 1]) and (pairs[:, 0, 0] > 0).all()
    assert np.allclose(anchors[32:, 0], 0)
    spread = np.linalg.norm(anchors[:, None] - anchors[None], axis=-1) + np.eye(39)
    assert spread.min() > 0.05  # farthest-point sampling: no two anchors together


def test_fitting_lowers_the_sdf_error_of_a_small_nphm():
    settings = FitSettings(
        neutral_steps=40,
        expression_steps=10,
        neutral_points_per_step=512,
        points_per_step=256,
        pool_expressions=3,
        mesh_resolution=32,
    )
    # the analytic head's named expression dims, plus one free dim
    config = dataclasses.replace(TINY, expression_dim=max(expression_ranges()) + 2)
    model, report = fit_nphm(AnalyticHead(), settings, config=config, progress=lambda message: None)
    first, last = report["stages"]["neutral"]["first_loss"], report["stages"]["neutral"]["final_loss"]
    assert last < 0.7 * first
    assert report["held_out"]["neutral_near_surface_l1"] < 0.05
    assert not any(p.requires_grad for p in model.parameters())


def test_the_fitting_script_writes_a_folder_that_load_nphm_reads(tmp_path, monkeypatch):
    from bench import fit_nphm_head

    out = tmp_path / "fitted"
    argv = ["fit_nphm_head", "--out", str(out), "--neutral-steps", "2", "--expression-steps", "1",
            "--neutral-points-per-step", "256", "--points-per-step", "128", "--pool-expressions", "2",
            "--mesh-resolution", "24"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    fit_nphm_head.main()
    model = load_nphm(out)  # the folder stands for out/nphm.pt
    assert sum(p.numel() for p in model.parameters()) > 4_000_000  # the default NPHM size
    assert json.loads((out / "fit_report.json").read_text())["settings"]["neutral_steps"] == 2
    assert torch.isfinite(model.sdf(torch.zeros(5, 3), torch.zeros(1344), torch.zeros(200))).all()
    assert [p.name for p in tmp_path.iterdir()] == ["fitted"]  # nothing half-written beside it
