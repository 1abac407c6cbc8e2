"""Marching cubes of a head SDF (dense and coarse-to-fine) and temporal smoothing of sequences."""

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from models.heads.analytic import AnalyticHead
from ops.geometry.meshing import NPHM_BOUNDS, extract_mesh, warp_available
from tests.builders import analytic_expression as code

RESOLUTION = 40
VOXEL = min((np.array(NPHM_BOUNDS[1]) - np.array(NPHM_BOUNDS[0])) / (RESOLUTION - 1))


@pytest.fixture(scope="module")
def head() -> AnalyticHead:
    return AnalyticHead()


@pytest.mark.parametrize("expression", [code(), code(jaw_open=1.0, lip_round=0.5, brow_raise=0.7)])
def test_coarse_to_fine_matches_dense_with_fewer_points(head, expression):
    identity = torch.full((1344,), 0.05)
    dense = extract_mesh(head, identity, expression, resolution=RESOLUTION, method="dense")
    fine = extract_mesh(head, identity, expression, resolution=RESOLUTION, method="coarse_to_fine")
    assert dense.points_evaluated == RESOLUTION**3
    assert fine.points_evaluated < dense.points_evaluated / 2
    to_dense, _ = cKDTree(dense.vertices).query(fine.vertices)
    to_fine, _ = cKDTree(fine.vertices).query(dense.vertices)
    assert max(to_dense.max(), to_fine.max()) <= VOXEL
    assert abs(len(fine.vertices) - len(dense.vertices)) <= 0.01 * len(dense.vertices)


def test_mesh_is_closed_and_outward_facing(head):
    mesh = extract_mesh(head, torch.zeros(1344), code(jaw_open=0.7), resolution=RESOLUTION)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert len(mesh.faces) > 2000 and mesh.seconds > 0
    surface = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    assert surface.is_watertight
    assert surface.volume > 0  # positive volume: normals point out of the head


def test_opening_the_jaw_changes_the_mouth_region(head):
    closed = extract_mesh(head, torch.zeros(1344), code(), resolution=48)
    opened = extract_mesh(head, torch.zeros(1344), code(jaw_open=1.0), resolution=48)

    def front_depth_at_mouth(vertices: np.ndarray) -> float:
        # How far forward the surface is on a small column through the middle of the lips.
        column = (np.abs(vertices[:, 0]) < 0.03) & (np.abs(vertices[:, 1] + 0.125) < 0.012)
        return float(vertices[column, 2].max())

    assert front_depth_at_mouth(closed.vertices) > 0.24  # lips
    assert front_depth_at_mouth(opened.vertices) < front_depth_at_mouth(closed.vertices) - 0.03  # a gap
    chin = lambda v: v[(np.abs(v[:, 0]) < 0.03) & (v[:, 2] > 0.1), 1].min()
    assert chin(opened.vertices) < chin(closed.vertices) - 0.02  # the chin went down
    far_from_mouth = lambda v: v[v[:, 1] > 0.3]
    assert np.allclose(
        np.sort(far_from_mouth(closed.vertices), 0), np.sort(far_from_mouth(opened.vertices), 0), atol=1e-5
    )


def test_bad_arguments_raise_clear_errors(head):
    with pytest.raises(ValueError, match="method"):
        extract_mesh(head, torch.zeros(1344), torch.zeros(200), method="sparse")
    with pytest.raises(ValueError, match="marching_cubes"):
        extract_mesh(head, torch.zeros(1344), torch.zeros(200), marching_cubes="vtk")
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(head, torch.zeros(1344), torch.zeros(200), resolution=16, bounds=((2, 2, 2), (3, 3, 3)))


def test_nphm_heads_are_meshed_through_their_field_on_their_device():
    from tests.test_nphm import TINY, tiny_model

    model = tiny_model()
    identity, expression = torch.zeros(TINY.identity_dim), torch.zeros(TINY.expression_dim)

    class SdfOnly:  # the bare HeadModel protocol: one sdf call per batch of grid points
        identity_dim, expression_dim = TINY.identity_dim, TINY.expression_dim
        sdf = staticmethod(model.sdf)

    via_field = extract_mesh(model, identity, expression, resolution=24, device="cpu")
    via_sdf = extract_mesh(SdfOnly(), identity, expression, resolution=24)
    assert len(via_field.vertices) > 100
    assert np.array_equal(via_field.vertices, via_sdf.vertices) and np.array_equal(via_field.faces, via_sdf.faces)
    dense_field = extract_mesh(model, identity, expression, resolution=24, method="dense")
    dense_sdf = extract_mesh(SdfOnly(), identity, expression, resolution=24, method="dense")
    assert np.array_equal(dense_field.vertices, dense_sdf.vertices)


@pytest.mark.skipif(not warp_available(), reason="NVIDIA Warp not installed (pip install warp-lang: the gpu extra)")
def test_warp_marching_cubes_gives_the_scikit_image_surface(head):
    # Warp is the CUDA path; it also runs on the CPU (kernels compiled once, then cached).
    expression = code(jaw_open=0.6)
    ours = extract_mesh(head, torch.zeros(1344), expression, resolution=RESOLUTION, marching_cubes="warp")
    reference = extract_mesh(head, torch.zeros(1344), expression, resolution=RESOLUTION, marching_cubes="skimage")
    assert len(ours.vertices) == len(reference.vertices) and len(ours.faces) == len(reference.faces)
    assert cKDTree(reference.vertices).query(ours.vertices)[0].max() < 1e-5
    assert trimesh.Trimesh(ours.vertices, ours.faces).volume > 0  # same outward winding
