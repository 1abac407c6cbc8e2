"""The analytic demo head: interface, placement in the NPHM box, identity and expression effects."""

import numpy as np
import pytest
import torch

from models.heads.analytic import IDENTITY_DIMS, AnalyticHead
from models.heads.base import NPHM_GRID_MAX, NPHM_GRID_MIN, HeadModel
from ops.geometry.meshing import extract_mesh
from tests.builders import analytic_expression as expression
from tests.conftest import SHARED_DATA

MEAN_CODE = SHARED_DATA / "nphm_identity_lat_mean.npy"


@pytest.fixture(scope="module")
def head() -> AnalyticHead:
    return AnalyticHead()


def test_implements_head_model_and_signs(head):
    assert isinstance(head, HeadModel)
    points = torch.tensor([[0.0, 0.1, 0.0], list(NPHM_GRID_MIN), list(NPHM_GRID_MAX)])
    sdf = head.sdf(points, torch.zeros(1344), torch.zeros(200))
    assert sdf.shape == (3,) and sdf.dtype == torch.float32
    assert sdf[0] < -0.1 and (sdf[1:] > 0.1).all()


def test_surface_is_a_head_sized_closed_shape_inside_the_nphm_box(head):
    mesh = extract_mesh(head, torch.zeros(1344), torch.zeros(200), resolution=40)
    low, high = mesh.vertices.min(0), mesh.vertices.max(0)
    assert (low > np.array(NPHM_GRID_MIN) + 0.02).all() and (high < np.array(NPHM_GRID_MAX) - 0.02).all()
    assert 0.5 < high[0] - low[0] < 0.75  # ear to ear
    assert 0.9 < high[1] - low[1] < 1.1  # neck cut to crown
    nose_tip = mesh.vertices[mesh.vertices[:, 2].argmax()]
    assert abs(nose_tip[0]) < 0.03 and 0.3 < nose_tip[2] < 0.4  # the face looks along +z


def test_forward_deformation_inverts_backward(head):
    generator = torch.Generator().manual_seed(0)
    points = torch.tensor(NPHM_GRID_MIN) + torch.rand(4000, 3, generator=generator) * (
        torch.tensor(NPHM_GRID_MAX) - torch.tensor(NPHM_GRID_MIN)
    )
    code = expression(jaw_open=0.9, lip_round=0.6, lip_stretch=-0.3, brow_raise=0.8, smile=0.4)
    canonical = head.deform_points_backward(points, code)
    assert (canonical - points).abs().max() > 0.05  # it does move points
    back = head.deform_points_forward(canonical, torch.zeros(1344), code)
    assert (back - points).abs().max() < 1e-3


def test_jaw_open_parts_the_lips(head):
    between_lips = torch.tensor([[0.0, -0.12, 0.25]])
    closed = head.sdf(between_lips, torch.zeros(1344), expression(jaw_open=0.0))
    opened = head.sdf(between_lips, torch.zeros(1344), expression(jaw_open=1.0))
    assert closed < 0 < opened


def test_expressions_move_brows_lids_and_lips(head):
    identity = torch.zeros(1344)
    above_brow = torch.tensor([[0.10, 0.24, 0.22]])
    assert head.sdf(above_brow, identity, expression()) > 0 > head.sdf(above_brow, identity, expression(brow_raise=1.0))
    on_eyeball = torch.tensor([[0.10, 0.125, 0.227]])  # just in front of the cornea
    assert head.sdf(on_eyeball, identity, expression()) > 0 > head.sdf(on_eyeball, identity, expression(blink=1.0))
    lip_corner = torch.tensor([[0.095, -0.106, 0.235]])
    assert head.sdf(lip_corner, identity, expression(lip_stretch=1.0)) < head.sdf(
        lip_corner, identity, expression(lip_round=1.0)
    )


def test_identity_dims_change_the_shape_and_codes_are_bounded(head):
    probe = torch.tensor([[0.0, -0.005, 0.37]])  # just past the average nose tip
    long_nose = torch.zeros(1344)
    long_nose[IDENTITY_DIMS["nose_length"]] = 0.2
    assert head.sdf(probe, torch.zeros(1344), torch.zeros(200)) > 0 > head.sdf(probe, long_nose, torch.zeros(200))
    wild = torch.full((1344,), 5.0)  # far outside typical codes: saturates, still a head in the box
    mesh = extract_mesh(head, wild, torch.zeros(200), resolution=32)
    assert (mesh.vertices.min(0) > np.array(NPHM_GRID_MIN)).all() and (
        mesh.vertices.max(0) < np.array(NPHM_GRID_MAX)
    ).all()


def test_nphm_mean_identity_code_gives_the_average_head(head):
    if not MEAN_CODE.exists():
        pytest.skip(f"{MEAN_CODE} not present")
    code = torch.from_numpy(np.load(MEAN_CODE).astype(np.float32))
    points = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) - 0.5  # fixed: no flaky draws
    difference = head.sdf(points, code, torch.zeros(200)) - head.sdf(points, torch.zeros(1344), torch.zeros(200))
    assert difference.abs().max() < 0.01


def test_mouth_opening_at_flame_scale_and_lip_gestures(head):
    """A wide "a" parts the lips ~15-20 mm at FLAME scale (NPHM units / 4); p/b/m press them shut
    with the jaw ajar; f/v draw the lower lip back."""
    identity = torch.zeros(1344)

    def gap_mm(code) -> float:
        y = torch.linspace(-0.20, -0.03, 341)  # vertical lines through the lips, x = 0
        best = 0.0
        for z in (0.21, 0.22, 0.23):
            line = torch.stack([torch.zeros_like(y), y, torch.full_like(y, z)], 1)
            inside = torch.nonzero(head.sdf(line, identity, code) < 0).squeeze(1).numpy()
            if len(inside) > 1:
                best = max(best, float(np.diff(inside).max() - 1) * 0.0005)
        return best * 1000 / 4

    assert 15.0 <= gap_mm(expression(jaw_open=0.9)) <= 22.0
    assert gap_mm(expression()) == 0.0
    assert gap_mm(expression(jaw_open=0.3, lip_press=0.5)) == 0.0 < gap_mm(expression(jaw_open=0.3))
    lower_lip_front = torch.tensor([[0.0, -0.118, 0.262]])  # drawn back under the upper teeth on "f"
    assert (
        head.sdf(lower_lip_front, identity, expression(lip_tuck=0.5))
        > 0
        > head.sdf(lower_lip_front, identity, expression())
    )
    code = expression(jaw_open=0.2, lip_press=0.4, lip_tuck=0.3, lip_round=0.5)
    points = torch.rand(3000, 3, generator=torch.Generator().manual_seed(1)) * 0.3 - torch.tensor([0.15, 0.25, -0.1])
    back = head.deform_points_forward(head.deform_points_backward(points, code), identity, code)
    assert (back - points).abs().max() < 1e-3  # the new lip gestures invert like the others
