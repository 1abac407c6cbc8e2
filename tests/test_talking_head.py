"""Codes -> meshes -> frames -> MP4: meshing per frame, one camera per clip, audio muxed and trimmed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.heads.analytic import EXPRESSION_DIMS, AnalyticHead
from ops.geometry.mesh_stream import MeshStream
from ops.geometry.meshing import Mesh
from ops.geometry.talking_head import (
    PlyMeshSequence,
    estimated_bounds,
    expression_meshes,
    mesh_frames,
    render_expression_video,
    render_talking_head,
    talking_head_render_config,
    torch_threads,
    write_meshes_ply,
)
from tests.builders import grid_mesh, speech_like
from tests.video_tools import probe_video

FPS = 24
SIZE = 64


@pytest.fixture(scope="module")
def head() -> AnalyticHead:
    return AnalyticHead()


def _codes(jaw: list[float]) -> np.ndarray:
    codes = np.zeros((len(jaw), 200), np.float32)
    codes[:, EXPRESSION_DIMS["jaw_open"]] = jaw
    return codes


def _background_mask(frame: np.ndarray, config) -> np.ndarray:
    background = np.round(np.array(config.background) * 255).astype(np.int64)
    return np.all(np.abs(frame.astype(np.int64) - background) <= 3, axis=-1)


def test_expression_meshes_follow_the_jaw(head):
    progress = []
    with torch_threads(1):
        meshes = expression_meshes(
            head, np.zeros(1344), _codes([0.0, 1.0]), resolution=24, progress=lambda d, t: progress.append((d, t))
        )
    assert [type(m) for m in meshes] == [Mesh, Mesh] and progress == [(1, 2), (2, 2)]
    closed, opened = meshes
    assert closed.faces.dtype == np.int32 and closed.faces.max() < len(closed.vertices)

    # The chin (lowest point in front of the neck) drops as the jaw opens; the crown stays.
    def chin(mesh):
        front = (mesh.vertices[:, 2] > 0.05) & (np.abs(mesh.vertices[:, 0]) < 0.06)
        return mesh.vertices[front, 1].min()

    assert chin(opened) < chin(closed) - 0.02
    assert abs(opened.vertices[:, 1].max() - closed.vertices[:, 1].max()) < 0.02


def test_expression_meshes_reject_bad_shapes(head):
    with pytest.raises(ValueError, match=r"expression codes must be \[T>0, 200\]"):
        expression_meshes(head, np.zeros(1344), np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"identity code must be \[1344\]"):
        expression_meshes(head, np.zeros(64), _codes([0.0]))


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_meshes_round_trip_through_ply(tmp_path):
    vertices, faces = grid_mesh()
    meshes = [(vertices + 0.01 * k, faces[: len(faces) - k]) for k in range(3)]
    paths = write_meshes_ply(meshes, tmp_path / "meshes")
    assert [p.name for p in paths] == ["frame_00000.ply", "frame_00001.ply", "frame_00002.ply"]
    lazy = PlyMeshSequence(paths)
    assert len(lazy) == 3 and len(lazy[1:]) == 2
    for (v, f), (v_read, f_read) in zip(meshes, lazy):
        np.testing.assert_allclose(v_read, v, atol=1e-6)
        np.testing.assert_array_equal(f_read, f)


def test_mesh_frames_accepts_every_form_and_refuses_nonsense():
    vertices, faces = grid_mesh()
    sequence = np.stack([vertices, vertices + 0.01])
    assert len(mesh_frames(sequence, faces)) == 2
    assert len(mesh_frames([(vertices, faces)])) == 1
    assert len(mesh_frames([Mesh(vertices, faces, 0, 0.0)])) == 1
    with pytest.raises(ValueError, match="needs `faces`"):
        mesh_frames(sequence)
    with pytest.raises(ValueError, match=r"\[T>0, V, 3\]"):
        mesh_frames(np.zeros((2, 5)), faces)
    with pytest.raises(ValueError, match="no frames"):
        mesh_frames([])
    with pytest.raises(ValueError, match="carry their own faces"):
        mesh_frames([(vertices, faces)], faces)


def test_vertex_sequence_video_has_the_frames_and_the_audio_cut_to_length(tmp_path):
    vertices, faces = grid_mesh()
    n_frames = 30
    wobble = 0.02 * np.sin(np.arange(n_frames) / 3.0)[:, None, None]
    sequence = vertices[None] + wobble * np.array([0.0, 0.0, 1.0])
    audio = speech_like(n_frames / FPS + 1.0)  # one second longer than the video: trimmed
    preview = tmp_path / "preview.png"
    progress = []
    path = render_talking_head(
        sequence, faces, out_mp4=tmp_path / "clip.mp4", audio_samples=audio, sample_rate=16_000, fps=FPS,
        render_config=talking_head_render_config(SIZE), preview_png=preview, progress=lambda d, t: progress.append(d),
    )  # fmt: skip
    info = probe_video(path)
    assert info["n_frames"] == n_frames and info["fps"] == FPS
    assert (info["width"], info["height"]) == (SIZE, SIZE)
    assert info["audio_codec"] == "aac"
    assert abs(info["audio_duration"] - n_frames / FPS) < 1 / FPS
    assert progress[-1] == n_frames
    assert Image.open(preview).size == (SIZE, SIZE)


def test_side_by_side_pairs_up_to_the_shorter_sequence(tmp_path):
    vertices, faces = grid_mesh()
    generated = [(vertices + 0.01 * k, faces) for k in range(8)]
    truth = [(vertices, faces[: len(faces) - k % 3]) for k in range(6)]  # topology varies per frame
    path = render_talking_head(generated, out_mp4=tmp_path / "pair.mp4", fps=FPS, ground_truth=truth,
                               render_config=talking_head_render_config(SIZE))  # fmt: skip
    info = probe_video(path)
    assert info["n_frames"] == 6 and info["width"] == 2 * SIZE and info["audio_codec"] is None


def test_head_is_framed_frontally(tmp_path, head):
    """The camera looks at the face: the head is inside the frame and left-right symmetric."""
    config = talking_head_render_config(96)
    with torch_threads(1):
        meshes = expression_meshes(head, np.zeros(1344), _codes([0.0]), resolution=32)
    preview = tmp_path / "frame.png"
    render_talking_head(meshes, out_mp4=tmp_path / "head.mp4", fps=FPS, render_config=config, preview_png=preview)
    frame = np.asarray(Image.open(preview))
    foreground = ~_background_mask(frame, config)
    assert 0.2 < foreground.mean() < 0.8
    assert (
        not foreground[0].any()
        and not foreground[-1].any()
        and not foreground[:, 0].any()
        and not foreground[:, -1].any()
    )
    mirrored_overlap = (foreground & foreground[:, ::-1]).sum() / foreground.sum()
    assert mirrored_overlap > 0.95  # a side view would not be symmetric
    # Front view: the nose (z ~ 0.34) is nearest, so the face is visible; from the back the
    # nose-and-eyes region would be flat skin. Eyes and mouth make the middle rows less uniform.
    rows, cols = np.nonzero(foreground)
    middle = frame[
        rows.min() + (rows.max() - rows.min()) // 3 : rows.max() - (rows.max() - rows.min()) // 4,
        cols.min() : cols.max(),
    ]
    assert middle.std() > 10


@pytest.mark.parametrize("overlap", [True, False])
def test_expression_video_keeps_meshes_and_cleans_up(tmp_path, head, overlap):
    codes = _codes([0.0, 0.5, 1.0, 0.5])
    audio = speech_like(len(codes) / FPS)
    stages = []
    kept = tmp_path / "kept_meshes"
    path = render_expression_video(
        head, np.zeros(1344), codes, tmp_path / "talk.mp4", audio_samples=audio, sample_rate=16_000, fps=FPS,
        resolution=16, meshes_dir=kept, render_config=talking_head_render_config(SIZE), cpu_threads=1,
        progress=lambda stage, done, total: stages.append((stage, done, total)), overlap=overlap,
    )  # fmt: skip
    assert probe_video(path)["n_frames"] == 4
    assert sorted(p.name for p in kept.iterdir()) == [f"frame_0000{i}.ply" for i in range(4)]
    if overlap:  # one stage: each frame meshed (on the worker) and rendered
        assert [s for s in stages if s[0] == "frames"] == [("frames", i, 4) for i in range(1, 5)]
    else:
        assert ("meshing", 4, 4) in stages and ("rendering", 4, 4) in stages
    # Without a meshes folder, nothing is left beside the video.
    render_expression_video(head, np.zeros(1344), codes, tmp_path / "talk2.mp4", audio_samples=None, sample_rate=None,
                            fps=FPS, resolution=16, render_config=talking_head_render_config(SIZE), cpu_threads=1,
                            overlap=overlap)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept_meshes", "talk.mp4", "talk2.mp4"]


def test_estimated_bounds_hold_every_frame(head):
    """The camera is fitted before the frames exist: the estimate must contain every frame's mesh."""
    t = np.arange(30)
    codes = _codes((0.5 + 0.5 * np.sin(t / 3)).tolist())
    codes[:, EXPRESSION_DIMS["brow_raise"]] = np.cos(t / 4)
    with torch_threads(1):
        lo, hi = estimated_bounds(head, np.zeros(1344), codes, samples=6)
        meshes = expression_meshes(head, np.zeros(1344), codes, resolution=48)
    exact_lo = np.min([m.vertices.min(axis=0) for m in meshes], axis=0)
    exact_hi = np.max([m.vertices.max(axis=0) for m in meshes], axis=0)
    assert np.all(lo <= exact_lo) and np.all(hi >= exact_hi)
    assert np.all(exact_lo - lo < 0.08) and np.all(hi - exact_hi < 0.08)  # and stays tight (two coarse voxels)


def _tiny_mesh(value: float) -> Mesh:
    return Mesh(np.full((3, 3), value, np.float32), np.array([[0, 1, 2]], np.int32), 0, 0.0)


@pytest.mark.parametrize("workers", [1, 3])
def test_mesh_stream_keeps_frame_order_and_hands_worker_errors_to_the_caller(workers):
    def make(frame: int) -> Mesh:
        if frame == 7:
            raise ValueError("frame 7: no surface inside the grid")
        return _tiny_mesh(frame)

    assert [int(m.vertices[0, 0]) for m in MeshStream(make, 7, workers=workers, depth=1)] == list(range(7))
    seen = []
    with pytest.raises(ValueError, match="frame 7"), MeshStream(make, 10, workers=workers, depth=1) as stream:
        seen.extend(int(mesh.vertices[0, 0]) for mesh in stream)
    assert seen == list(range(7))  # every frame before the failing one, in order


def test_mesh_stream_stops_its_workers_when_the_caller_leaves_early():
    with MeshStream(_tiny_mesh, 10_000, workers=2, depth=2) as stream:
        first = next(iter(stream))
    assert first.vertices.shape == (3, 3) and not any(t.is_alive() for t in stream._threads)
