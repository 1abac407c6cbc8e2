"""`nphm_meshes`: an index of the dataset's files by default, the meshes compactly in copy mode;
frames read back lazily; memory of every streamed ingest independent of the sequence length.

Real PLY files (marching-cubes meshes of the analytic head, `ops.demo.meshes`), real Zarr stores.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ops.demo.meshes import base_meshes, write_nphm_mesh_frames
from ops.geometry.talking_head import mesh_frames, render_talking_head
from ops.tracking import ingest
from ops.tracking.errors import TrackingError
from ops.tracking.mesh_frames import stored_mesh_frames
from ops.tracking.mesh_index import require_mesh_mode
from ops.tracking.ply import read_ply, write_ply
from storage.layout import sequence_folder
from storage.mesh_codec import decode_faces, encode_faces
from storage.sequence_store import SequenceStore
from storage.streaming import GroupWriter
from storage.zarr_io import open_group_readonly
from tests.builders import grid_mesh

MESHES = Path("nphm_tracking") / "nphm_meshes"
KEY = "ID01_SEN01"


def _dataset(root: Path, n_frames: int, n_vertices: int = 20_000, key: str = KEY) -> Path:
    write_nphm_mesh_frames(root / key / MESHES, n_frames, n_vertices=n_vertices)
    return root


def _bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("data"), n_frames=12)


def _ingest(data: Path, store_root: Path, mode: str):
    store = SequenceStore(store_root)
    return store, ingest.ingest_nphm_meshes(sequence_folder(data, KEY), store, mode)


def test_reference_mode_stores_an_index_and_reads_frames_from_the_dataset(data, tmp_path):
    store, outcome = _ingest(data, tmp_path / "store", "reference")
    assert outcome.status == "materialized" and outcome.metadata["mode"] == "reference"
    raw = outcome.metadata["raw_bytes"]
    assert raw == _bytes_under(data / KEY / MESHES)
    assert _bytes_under(store.component_path(KEY, "nphm_meshes")) <= 0.01 * raw
    frames = stored_mesh_frames(store, KEY, data)
    assert len(frames) == 12 and len(stored_mesh_frames(store, KEY, data, n_frames=5)) == 5
    low, high = frames.bounds()
    for index in (0, 5, 11):
        mesh = read_ply(data / KEY / MESHES / f"frame_{index:04d}.ply")
        vertices, faces = frames[index]
        np.testing.assert_array_equal(vertices, mesh.vertices)
        np.testing.assert_array_equal(faces, mesh.faces)
        assert (vertices >= low).all() and (vertices <= high).all()
    assert len({len(frames[k][1]) for k in range(4)}) > 1  # topology changes from frame to frame
    assert _ingest(data, tmp_path / "store", "reference")[1].status == "cached"


def test_reference_mode_renders_read_the_dataset(data, tmp_path):
    store, _ = _ingest(data, tmp_path / "store", "reference")
    truth = stored_mesh_frames(store, KEY, data, n_frames=3)
    assert mesh_frames(truth) is truth  # rendered lazily, frame by frame, not loaded whole
    generated = [grid_mesh()] * 3
    video = render_talking_head(generated, out_mp4=tmp_path / "gt.mp4", fps=24.0, ground_truth=truth)
    assert video.is_file() and video.stat().st_size > 0


def test_reference_mode_names_a_changed_or_missing_file(tmp_path):
    data = _dataset(tmp_path / "data", n_frames=4, n_vertices=3_000)
    store, _ = _ingest(data, tmp_path / "store", "reference")
    folder = data / KEY / MESHES
    frames = stored_mesh_frames(store, KEY, data)

    os.utime(folder / "frame_0000.ply", ns=(1, 1))  # touched (copied, restored): same content, fine
    frames[0]

    mesh = read_ply(folder / "frame_0001.ply")
    write_ply(folder / "frame_0001.ply", mesh.vertices + 0.01, mesh.faces)  # same size, new content
    with pytest.raises(TrackingError, match="content differs") as error:
        frames[1]
    message = str(error.value)
    assert str(folder / "frame_0001.ply") in message and "re-ingest" in message and "mode: copy" in message

    mesh = read_ply(folder / "frame_0002.ply")
    write_ply(folder / "frame_0002.ply", mesh.vertices, mesh.faces[:-1])
    with pytest.raises(TrackingError, match="size is .* bytes") as error:
        frames[2]
    assert str(folder / "frame_0002.ply") in str(error.value)

    (folder / "frame_0003.ply").unlink()
    with pytest.raises(TrackingError, match="the file is missing") as error:
        frames[3]
    assert str(folder / "frame_0003.ply") in str(error.value) and "nphm_meshes" in str(error.value)


def test_copy_mode_honours_its_error_bound(data, tmp_path):
    store, outcome = _ingest(data, tmp_path / "store", "copy")
    bound, measured = outcome.metadata["vertex_error_bound"], outcome.metadata["max_vertex_error"]
    assert 0 < measured <= bound < 1e-4
    assert store.attrs(KEY, "nphm_meshes")["vertex_error_bound"] == bound  # recorded with the data
    assert _bytes_under(store.component_path(KEY, "nphm_meshes")) <= 0.35 * outcome.metadata["raw_bytes"]
    frames = stored_mesh_frames(store, KEY, None)  # copy mode needs no dataset root
    worst = 0.0
    for index in range(len(frames)):
        mesh = read_ply(data / KEY / MESHES / f"frame_{index:04d}.ply")
        vertices, faces = frames[index]
        np.testing.assert_array_equal(faces, mesh.faces)
        worst = max(worst, float(np.abs(vertices - mesh.vertices).max()))
    assert worst == measured and worst <= bound


def test_mode_is_checked_and_older_layouts_ask_for_a_reingest(data, tmp_path):
    with pytest.raises(ValueError, match="nphm_meshes config `mode` must be one of reference, copy"):
        require_mesh_mode("symlink")
    store = SequenceStore(tmp_path / "store")
    store.write_component(KEY, "nphm_meshes", {"vertices": np.zeros((3, 3), np.float32)}, {"n_frames": 1})
    with pytest.raises(ValueError, match="older version.*re-ingest"):
        stored_mesh_frames(store, KEY, data)
    _ingest(data, tmp_path / "store", "reference")
    with pytest.raises(ValueError, match="needs the dataset root"):
        stored_mesh_frames(store, KEY, None)


def test_face_deltas_round_trip():
    faces = np.array([[0, 1, 2], [2, 1, 3], [100_000, 3, 7]], np.int32)
    np.testing.assert_array_equal(decode_faces(encode_faces(faces)), faces)


def test_streamed_arrays_equal_what_was_appended(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((n, 5_000, 3)).astype(np.float32) for n in (1, 17, 40, 3)]  # 60 KB rows
    writer = GroupWriter(tmp_path / "g")
    for block in blocks:
        writer.append("frames", block)
        writer.append("small", np.arange(len(block)))
    writer.attrs["n"] = 61
    writer.close()
    group = open_group_readonly(tmp_path / "g")
    np.testing.assert_array_equal(group["frames"][...], np.concatenate(blocks))
    assert group["frames"].chunks[0] == (1 << 20) // (5_000 * 12)  # ~1 MB chunks along time
    np.testing.assert_array_equal(group["small"][...], np.concatenate([np.arange(len(b)) for b in blocks]))
    assert group.attrs["n"] == 61


# ----------------------------------------------------------------------------- memory


def _peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _write_flame(seq: Path, n_frames: int, n_vertices: int) -> None:
    vertices, faces = base_meshes(n_vertices, n_bases=1)[0].vertices, base_meshes(n_vertices, n_bases=1)[0].faces
    folder = seq / "flame_2023_tracking" / "flame_meshes"
    folder.mkdir(parents=True)
    write_ply(seq / "flame_2023_tracking" / "flame_2023_template.ply", vertices, faces)
    for frame in range(n_frames):
        write_ply(folder / f"frame_{frame:04d}.ply", vertices + 0.001 * frame, faces)


@pytest.mark.parametrize("mode", ["reference", "copy"])
def test_mesh_ingest_memory_does_not_grow_with_length(tmp_path, mode):
    """Peak traced memory of ingesting 8 vs 48 frames of 20k-vertex meshes (the whole-sequence
    reader this replaced held every frame: ~6x)."""
    short, long = _dataset(tmp_path / "short", 8), _dataset(tmp_path / "long", 48)
    warm = SequenceStore(tmp_path / "warm")  # first-use costs (imports, caches) outside the measurement
    ingest.ingest_nphm_meshes(sequence_folder(short, KEY), warm, mode)
    peaks = {
        name: _peak_bytes(
            lambda r=root: ingest.ingest_nphm_meshes(sequence_folder(r, KEY), SequenceStore(r / "s"), mode)
        )
        for name, root in (("short", short), ("long", long))
    }
    assert peaks["long"] <= 1.3 * peaks["short"], peaks


def test_flame_ingest_memory_does_not_grow_with_length(tmp_path):
    """FLAME vertices are streamed in blocks: 80 vs 480 frames of 2k vertices."""
    for name, n_frames in (("short", 80), ("long", 480)):
        _write_flame(tmp_path / name / KEY, n_frames, 2_000)
    ingest.ingest_flame_vertices(sequence_folder(tmp_path / "short", KEY), SequenceStore(tmp_path / "warm"), fps=24)
    peaks = {
        name: _peak_bytes(
            lambda n=name: ingest.ingest_flame_vertices(
                sequence_folder(tmp_path / n, KEY), SequenceStore(tmp_path / n / "s"), fps=24
            )
        )
        for name in ("short", "long")
    }
    assert peaks["long"] <= 1.3 * peaks["short"], peaks
    store = SequenceStore(tmp_path / "long" / "s")
    vertices = store.read(KEY, "flame", "vertices")
    assert vertices.shape[0] == 480 and store.attrs(KEY, "flame")["n_frames"] == 480
    np.testing.assert_allclose(vertices[479] - vertices[0], 0.479, atol=1e-5)
