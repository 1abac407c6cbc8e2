"""Headless rendering on this machine's EGL (Mesa llvmpipe on CPU)."""

import ctypes.util

import numpy as np
import pytest
import trimesh

from ops.geometry.render import (
    RenderBackendError,
    RenderConfig,
    Renderer,
    render_sequence,
    side_by_side,
    vertex_normals,
)
from tests.conftest import SHARED_DATA

SIZE = 96
HEAD = SHARED_DATA / "nphm_template_flame_topology.ply"


@pytest.fixture(scope="module")
def renderer():
    with Renderer(RenderConfig(width=SIZE, height=SIZE)) as r:
        yield r


def _sphere(subdivisions=2, radius=1.0):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _foreground(frame, config):
    background = np.round(np.array(config.background) * 255).astype(np.int64)
    return np.any(np.abs(frame.astype(np.int64) - background) > 3, axis=-1)


def test_vertex_normals_of_a_sphere_point_outward():
    vertices, faces = _sphere()
    normals = vertex_normals(vertices, faces)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)
    assert np.all(np.sum(normals * vertices, axis=1) > 0.98)  # unit sphere: normal ~ position


def test_sphere_is_centered_on_background(renderer):
    vertices, faces = _sphere()
    renderer.fit_camera(vertices.min(axis=0), vertices.max(axis=0))
    frame = renderer.render(vertices, faces)
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    mask = _foreground(frame, renderer.config)
    assert 0.3 < mask.mean() < 0.8  # fills a good part of the frame, not all of it
    assert not mask[0, 0] and not mask[0, -1] and not mask[-1, 0] and not mask[-1, -1]
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - (SIZE - 1) / 2) < 1.5 and abs(cols.mean() - (SIZE - 1) / 2) < 1.5
    assert frame[mask].std() > 5  # shaded, not a flat silhouette


def test_camera_is_fixed_for_the_whole_sequence(renderer):
    vertices, faces = _sphere()
    sequence = np.stack([0.5 * vertices, vertices])  # the head "grows" between frames
    small, large = list(render_sequence(renderer, [(frame, faces) for frame in sequence]))
    small_area = _foreground(small, renderer.config).mean()
    large_area = _foreground(large, renderer.config).mean()
    # A camera refitted per frame would show both at the same size; a fixed one shows 1/4 area.
    assert small_area / large_area == pytest.approx(0.25, abs=0.05)


def test_topology_changes_between_frames(renderer):
    coarse, fine = _sphere(1), _sphere(3)
    frames = [coarse, fine, coarse]
    first, middle, last = list(render_sequence(renderer, frames))
    assert np.array_equal(first, last)
    assert not np.array_equal(first, middle)  # finer tessellation shades differently at the rim


def test_render_sequence_from_an_iterator_needs_bounds(renderer):
    vertices, faces = _sphere()
    with pytest.raises(ValueError, match="bounds"):
        list(render_sequence(renderer, iter([(vertices, faces)])))
    frames = list(render_sequence(renderer, iter([(vertices, faces)]), bounds=(vertices.min(0), vertices.max(0))))
    assert len(frames) == 1


def test_view_direction_is_configurable():
    vertices, faces = _sphere(3)
    bump = vertices[:, 0] > 0.7  # a nose on +x
    vertices = vertices.copy()
    vertices[bump] *= 1.6
    reach = {}
    for name, direction in [("front", (0.0, 0.0, 1.0)), ("back", (0.0, 0.0, -1.0))]:
        config = RenderConfig(width=SIZE, height=SIZE, view_direction=direction, fov_y_degrees=30.0)
        with Renderer(config) as r:
            r.fit_camera(np.full(3, -1.6), np.full(3, 1.6))  # a given box, centered on the sphere
            mask = _foreground(r.render(vertices, faces), config)
        cols = np.nonzero(mask)[1]
        reach[name] = (cols.max() - (SIZE - 1) / 2, (SIZE - 1) / 2 - cols.min())  # (right, left)
    # y up, camera on +z: +x is to the right of the image; seen from behind it is on the left.
    assert reach["front"][0] > reach["front"][1] + 5
    assert reach["back"][1] > reach["back"][0] + 5


def test_side_by_side_doubles_width(renderer):
    vertices, faces = _sphere()
    pairs = [(vertices, faces)]
    renderer.fit_camera(vertices.min(0), vertices.max(0))
    left, right = renderer.render(*pairs[0]), renderer.render(vertices * 0.8, faces)
    plain = side_by_side(left, right)
    labelled = side_by_side(left, right, ("ground truth", "generated"))
    assert plain.shape == (SIZE, 2 * SIZE, 3) == labelled.shape
    assert not np.array_equal(plain, labelled)  # captions were drawn
    assert not np.array_equal(plain[:, :SIZE], plain[:, SIZE:])  # two different panels
    with pytest.raises(ValueError, match="same shape"):
        side_by_side(plain, plain[:, :SIZE])


def test_bad_mesh_input_is_rejected(renderer):
    vertices, faces = _sphere()
    renderer.fit_camera(vertices.min(axis=0), vertices.max(axis=0))
    with pytest.raises(ValueError, match=r"faces index vertices"):
        renderer.render(vertices[:10], faces)
    with pytest.raises(ValueError, match=r"\[V, 3\]"):
        renderer.render(vertices[:, :2], faces)


def test_missing_egl_library_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("GLCONTEXT_LINUX_LIBEGL", "/nonexistent/libEGL.so.1")
    with pytest.raises(RenderBackendError, match="GLCONTEXT_LINUX_LIBEGL"):
        Renderer(RenderConfig(width=8, height=8, backend="egl"))


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None, reason="libOSMesa not installed")
def test_osmesa_fallback_matches_egl(renderer):
    vertices, faces = _sphere()
    renderer.fit_camera(vertices.min(axis=0), vertices.max(axis=0))
    egl_frame = renderer.render(vertices, faces)
    with Renderer(RenderConfig(width=SIZE, height=SIZE, backend="osmesa")) as osmesa:
        osmesa.fit_camera(vertices.min(axis=0), vertices.max(axis=0))
        osmesa_frame = osmesa.render(vertices, faces)
    # Both are llvmpipe; allow for rasterization differences at a few edge pixels.
    assert np.mean(np.abs(egl_frame.astype(int) - osmesa_frame.astype(int)) > 8) < 0.01
    # The EGL renderer still works after another context was made current.
    assert np.array_equal(renderer.render(vertices, faces), egl_frame)


@pytest.mark.skipif(not HEAD.exists(), reason="shared head mesh not present")
def test_shared_head_mesh_renders_centered():
    mesh = trimesh.load(HEAD, process=False)
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    # This NPHM template is stored with z up and the face toward +x.
    config = RenderConfig(width=128, height=128, view_direction=(1.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    with Renderer(config) as r:
        r.fit_camera(vertices.min(axis=0), vertices.max(axis=0))
        mask = _foreground(r.render(vertices, faces), config)
    assert 0.25 < mask.mean() < 0.8
    assert abs(np.nonzero(mask)[1].mean() - 63.5) < 4  # left-right symmetric face


def test_software_rasterizers_skip_msaa_by_default_and_keep_it_on_request():
    """MSAA tripled llvmpipe's frame time; a GPU keeps it. An explicit setting is honoured everywhere."""
    from ops.geometry.render import is_software_renderer

    assert is_software_renderer("llvmpipe (LLVM 15.0.6, 256 bits)") and not is_software_renderer(
        "NVIDIA H200/PCIe/SSE2"
    )
    with Renderer(RenderConfig(width=16, height=16)) as renderer:
        assert renderer.msaa_samples == (0 if is_software_renderer(renderer.gl_renderer) else 4)
    with Renderer(RenderConfig(width=16, height=16, msaa_samples=4)) as renderer:
        assert renderer.msaa_samples > 1
