import shutil

import numpy as np
import pytest
import trimesh

from ops.tracking.errors import TrackingError
from ops.tracking.flame import FLAME_MESHES_DIR, FLAME_TEMPLATE, read_flame_tracking
from ops.tracking.ply import write_ply
from tests.conftest import SHARED_DATA

SHARED_HEAD = SHARED_DATA / "nphm_template_flame_topology.ply"


@pytest.fixture(scope="module")
def template():
    if SHARED_HEAD.exists():
        mesh = trimesh.load(SHARED_HEAD, process=False)
    else:
        mesh = trimesh.creation.icosphere(subdivisions=3)
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int32)


def write_sequence(seq, template, n_frames=6, first=0):
    vertices, faces = template
    (seq / FLAME_MESHES_DIR).mkdir(parents=True, exist_ok=True)
    write_ply(seq / FLAME_TEMPLATE, vertices, faces)
    rng = np.random.default_rng(1)
    frames = vertices + 0.01 * rng.standard_normal((n_frames, *vertices.shape)).astype(np.float32)
    for row, frame in enumerate(frames):
        write_ply(frame_path(seq, first + row), frame, faces)
    return frames


def frame_path(seq, number):
    return seq / FLAME_MESHES_DIR / f"frame_{number}.ply"


@pytest.mark.parametrize("workers", [1, 3])
def test_reads_frames_template_and_faces(tmp_path, template, workers):
    frames = write_sequence(tmp_path, template, n_frames=6, first=10)
    tracking = read_flame_tracking(tmp_path, workers=workers)
    np.testing.assert_array_equal(tracking.vertices, frames)
    assert tracking.vertices.dtype == np.float32 and tracking.vertices.shape == (6, *template[0].shape)
    np.testing.assert_array_equal(tracking.template_vertices, template[0])
    np.testing.assert_array_equal(tracking.faces, template[1])
    np.testing.assert_array_equal(tracking.frame_numbers, range(10, 16))
    assert len(tracking) == 6


def test_frames_exported_by_trimesh_with_colors(tmp_path, template):
    frames = write_sequence(tmp_path, template, n_frames=3)
    for row, frame in enumerate(frames):
        mesh = trimesh.Trimesh(frame, template[1], vertex_colors=[200, 10, 10, 255], process=False)
        frame_path(tmp_path, row).write_bytes(trimesh.exchange.ply.export_ply(mesh))
    np.testing.assert_array_equal(read_flame_tracking(tmp_path).vertices, frames)


def test_frames_without_faces_are_accepted(tmp_path, template):
    frames = write_sequence(tmp_path, template, n_frames=2)
    write_ply(frame_path(tmp_path, 0), frames[0])
    np.testing.assert_array_equal(read_flame_tracking(tmp_path).vertices, frames)


@pytest.mark.parametrize("row", [0, 4])
def test_vertex_count_mismatch_names_frame_and_counts(tmp_path, template, row):
    frames = write_sequence(tmp_path, template, n_frames=5)
    write_ply(frame_path(tmp_path, row), frames[row][:-7])
    n_vertices = len(template[0])
    with pytest.raises(TrackingError, match=f"has {n_vertices - 7} vertices, expected {n_vertices}") as error:
        read_flame_tracking(tmp_path, workers=2)
    assert str(frame_path(tmp_path, row)) in str(error.value)


def test_first_frame_faces_must_match_template(tmp_path, template):
    frames = write_sequence(tmp_path, template, n_frames=3)
    write_ply(frame_path(tmp_path, 0), frames[0], template[1][:, ::-1])
    with pytest.raises(TrackingError, match="faces differ from the FLAME template's") as error:
        read_flame_tracking(tmp_path)
    assert str(frame_path(tmp_path, 0)) in str(error.value)
    # Trusting the template skips that check; the vertices are still read.
    np.testing.assert_array_equal(read_flame_tracking(tmp_path, verify_first_frame_faces=False).vertices, frames)


def test_missing_template_or_frames(tmp_path, template):
    write_sequence(tmp_path, template, n_frames=2)
    (tmp_path / FLAME_TEMPLATE).unlink()
    with pytest.raises(TrackingError, match="FLAME template is missing") as error:
        read_flame_tracking(tmp_path)
    assert str(tmp_path / FLAME_TEMPLATE) in str(error.value)
    write_ply(tmp_path / FLAME_TEMPLATE, *template)
    shutil.rmtree(tmp_path / FLAME_MESHES_DIR)
    with pytest.raises(TrackingError, match="folder is missing") as error:
        read_flame_tracking(tmp_path)
    assert str(tmp_path / FLAME_MESHES_DIR) in str(error.value)


def test_template_without_faces(tmp_path, template):
    write_sequence(tmp_path, template, n_frames=2)
    write_ply(tmp_path / FLAME_TEMPLATE, template[0])
    with pytest.raises(TrackingError, match="FLAME template has no faces"):
        read_flame_tracking(tmp_path)


def test_truncated_and_non_finite_frames_name_the_frame(tmp_path, template):
    frames = write_sequence(tmp_path, template, n_frames=4)
    data = frame_path(tmp_path, 2).read_bytes()
    frame_path(tmp_path, 2).write_bytes(data[:-100])
    with pytest.raises(TrackingError, match="truncated body") as error:
        read_flame_tracking(tmp_path)
    assert str(frame_path(tmp_path, 2)) in str(error.value)
    broken = frames[3].copy()
    broken[100] = np.nan
    write_ply(frame_path(tmp_path, 2), frames[2], template[1])
    frame_path(tmp_path, 3).write_bytes(data.replace(frames[2][100].tobytes(), broken[100].tobytes()))
    with pytest.raises(TrackingError, match=r"1 vertices have NaN or Inf coordinates \(first: vertex 100\)") as error:
        read_flame_tracking(tmp_path)
    assert str(frame_path(tmp_path, 3)) in str(error.value)


def test_gap_in_frames(tmp_path, template):
    write_sequence(tmp_path, template, n_frames=4)
    frame_path(tmp_path, 2).unlink()
    with pytest.raises(TrackingError, match="first missing: 2"):
        read_flame_tracking(tmp_path)
