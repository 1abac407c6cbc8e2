"""Per-frame render time: our reused moderngl Renderer vs the FLAME peers' pyrender pattern.

Baseline = VOCA's `render_mesh_helper` as FaceFormer and CodeTalker ship it (CodeTalker
main/render.py): for every frame a new trimesh + pyrender.Mesh (smooth), a new Scene with five
directional lights, and a new `pyrender.OffscreenRenderer(800, 800)`. Both sides render the same
mesh sequence at 800x800 on the same EGL device, in one run. Only rendering to an RGB array is
timed (no video encoding). The peers never free their renderer; we call delete() so the
baseline does not exhaust GL resources, which can only make it faster.

Run: python -m bench.render [--frames N]   (pyrender is a benchmark-only dependency)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import trimesh

from bench import SHARED_DATA
from ops.geometry.render import RenderConfig, Renderer

HEAD = SHARED_DATA / "nphm_template_flame_topology.ply"
SIZE = 800
WARMUP_FRAMES = 2


def head_sequence(n_frames: int) -> tuple[np.ndarray, np.ndarray, str]:
    """[T, V, 3] frames of the shared head mesh with small smooth perturbations (else a sphere)."""
    if HEAD.exists():
        mesh = trimesh.load(HEAD, process=False)
        # stored with z up and the face toward +x; permute to the canonical y up, face toward +z
        vertices = np.asarray(mesh.vertices, np.float64)[:, [1, 2, 0]]
        source = HEAD.name
    else:
        mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
        vertices = np.asarray(mesh.vertices, np.float64)
        source = "generated icosphere"
    faces = np.asarray(mesh.faces)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=vertices.shape)
    scale = 0.003 * np.ptp(vertices, axis=0).max()
    phases = np.sin(np.linspace(0, 4 * np.pi, n_frames))[:, None, None]
    return vertices[None] + scale * phases * direction[None], faces, source


def time_ours(sequence: np.ndarray, faces: np.ndarray, size: int) -> tuple[float, str]:
    config = RenderConfig(width=size, height=size)
    with Renderer(config) as renderer:
        renderer.fit_camera(sequence.reshape(-1, 3).min(axis=0), sequence.reshape(-1, 3).max(axis=0))
        for vertices in sequence[:WARMUP_FRAMES]:
            renderer.render(vertices, faces)
        start = time.perf_counter()
        for vertices in sequence:
            frame = renderer.render(vertices, faces)
        elapsed = time.perf_counter() - start
        assert frame.shape == (size, size, 3)
        return elapsed / len(sequence), renderer.gl_renderer


def _import_pyrender():
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    # pyrender 0.1.45 still uses np.infty, removed in NumPy 2; restore the alias for it only here.
    if not hasattr(np, "infty"):
        np.infty = np.inf
    import pyrender

    return pyrender


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def render_frame_baseline(pyrender, vertices: np.ndarray, faces: np.ndarray, eye_distance: float) -> np.ndarray:
    """One frame the way VOCA/FaceFormer/CodeTalker render it (new renderer every frame)."""
    material = pyrender.material.MetallicRoughnessMaterial(
        alphaMode="BLEND", baseColorFactor=[0.3, 0.3, 0.3, 1.0], metallicFactor=0.8, roughnessFactor=0.8
    )
    shape = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    mesh = pyrender.Mesh.from_trimesh(shape, material=material, smooth=True)
    scene = pyrender.Scene(ambient_light=[0.2, 0.2, 0.2], bg_color=[0, 0, 0])
    focal = 4754.97941935 / 2  # VOCA's intrinsics for 800x800
    camera = pyrender.IntrinsicsCamera(
        fx=focal, fy=focal, cx=SIZE / 2, cy=SIZE / 2, znear=0.01, zfar=2.0 * eye_distance
    )
    scene.add(mesh, pose=np.eye(4))
    camera_pose = np.eye(4)
    camera_pose[2, 3] = eye_distance
    scene.add(camera, pose=camera_pose)
    light = pyrender.DirectionalLight(color=np.ones(3), intensity=2.0)
    position = camera_pose[:3, 3]
    angle = np.pi / 6.0
    for rotation in (np.eye(3), _rotation_x(angle), _rotation_x(-angle), _rotation_y(-angle), _rotation_y(angle)):
        light_pose = np.eye(4)
        light_pose[:3, 3] = rotation @ position
        scene.add(light, pose=light_pose)
    renderer = pyrender.OffscreenRenderer(viewport_width=SIZE, viewport_height=SIZE)
    color, _ = renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
    renderer.delete()
    return color[..., ::-1]


def time_baseline(sequence: np.ndarray, faces: np.ndarray) -> float:
    pyrender = _import_pyrender()
    # VOCA puts a FLAME head (~0.25 m) 1 m from the camera; keep that framing for this mesh's scale.
    center = sequence.reshape(-1, 3).mean(axis=0)
    eye_distance = 4.0 * float(np.ptp(sequence.reshape(-1, 3), axis=0).max())
    for vertices in sequence[:WARMUP_FRAMES]:
        render_frame_baseline(pyrender, vertices - center, faces, eye_distance)
    start = time.perf_counter()
    for vertices in sequence:
        frame = render_frame_baseline(pyrender, vertices - center, faces, eye_distance)
    elapsed = time.perf_counter() - start
    assert frame.shape == (SIZE, SIZE, 3)
    return elapsed / len(sequence)


def _rate(seconds_per_frame: float) -> str:
    return f"{1000 * seconds_per_frame:7.1f} ms/frame  {1 / seconds_per_frame:6.1f} frames/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()

    sequence, faces, source = head_sequence(args.frames)
    print(f"mesh: {source}, {sequence.shape[1]} vertices, {len(faces)} faces, {len(sequence)} frames at {SIZE}x{SIZE}")

    ours_s, gl_renderer = time_ours(sequence, faces, SIZE)
    print(f"renderer: {gl_renderer}")
    print(f"ours     (moderngl, one Renderer reused):        {_rate(ours_s)}")
    ours_512_s, _ = time_ours(sequence, faces, 512)
    print(f"ours at the default 512x512:                     {_rate(ours_512_s)}")
    try:
        baseline_s = time_baseline(sequence, faces)
    except Exception as error:  # report, do not hide, why the baseline could not run
        print(f"baseline could not run: {type(error).__name__}: {error}")
        failed = {
            "ours_frames_per_s": 1 / ours_s,
            "ours_512_frames_per_s": 1 / ours_512_s,
            "baseline_error": str(error),
        }
        print(json.dumps(failed))
        return
    print(f"baseline (pyrender, new OffscreenRenderer/frame): {_rate(baseline_s)}")
    print(f"speedup per frame at {SIZE}x{SIZE}: {baseline_s / ours_s:.1f}x")
    print(
        json.dumps(
            {
                "speedup": baseline_s / ours_s,
                "ours_frames_per_s": 1 / ours_s,
                "baseline_frames_per_s": 1 / baseline_s,
                "ours_512_frames_per_s": 1 / ours_512_s,
                "resolution": SIZE,
                "frames": len(sequence),
                "vertices": int(sequence.shape[1]),
                "gl_renderer": gl_renderer,
            }
        )
    )


if __name__ == "__main__":
    main()
