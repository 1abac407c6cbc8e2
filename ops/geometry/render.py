"""Headless shaded rendering of mesh sequences with moderngl.

One `Renderer` holds one offscreen OpenGL context and framebuffer and is reused for every frame.
The context comes from EGL (Mesa llvmpipe on CPU, the NVIDIA driver on GPU: same code) or, as a
fallback, from Mesa's OSMesa library. The camera is fitted once to the bounds of a whole sequence,
so the head does not jump or breathe in size between frames.

Canonical axes: y up, the face looks toward +z, so the default camera sits on +z looking at -z.
Frames come back as uint8 RGB arrays [H, W, 3], row 0 at the top.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import moderngl
import numpy as np

MeshFrame = tuple[np.ndarray, np.ndarray]  # (vertices [V, 3] float, faces [F, 3] int)


class RenderBackendError(RuntimeError):
    """No headless OpenGL context could be created."""


@dataclass(frozen=True)
class RenderConfig:
    width: int = 512
    height: int = 512
    view_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)  # from the subject toward the camera
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    fov_y_degrees: float = 20.0  # narrow, portrait-like: little perspective distortion of the face
    margin: float = 1.1  # framing slack around the fitted bounds (1.0 = touching the border)
    color: tuple[float, float, float] = (0.82, 0.64, 0.54)  # neutral skin tone, linear RGB
    background: tuple[float, float, float] = (0.09, 0.09, 0.11)
    # Anti-aliasing samples, clamped to what the driver offers. None: 4 on a GPU, none on a software
    # rasterizer (Mesa llvmpipe), where 4x MSAA made a 512x512 head frame 2.7x slower (13 -> 35 ms,
    # measured) and rendering the slowest stage of `facetalk animate` on a CPU.
    msaa_samples: int | None = None
    backend: str = "egl"  # "egl", "osmesa", or "auto" (EGL, then OSMesa)
    egl_device_index: int | None = None  # which GPU/EGL device; None: the first (or GLCONTEXT_DEVICE_INDEX)


@dataclass(frozen=True)
class Camera:
    view: np.ndarray  # [4, 4] world -> camera (rigid)
    projection: np.ndarray  # [4, 4] camera -> clip (OpenGL convention)


# ---------------------------------------------------------------- geometry (numpy only)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted per-vertex normals [V, 3], unit length (zero for unreferenced vertices)."""
    tri = vertices[faces]  # [F, 3, 3]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    corner_vertex = faces.reshape(-1)
    normals = np.empty((len(vertices), 3), dtype=np.float64)
    for axis in range(3):  # bincount is ~10x faster than np.add.at for scatter-add
        normals[:, axis] = np.bincount(
            corner_vertex, weights=np.repeat(face_normals[:, axis], 3), minlength=len(vertices)
        )
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, 1e-12)


def sequence_bounds(vertex_arrays: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (min [3], max [3]) over all frames of a sequence."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for vertices in vertex_arrays:
        points = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
        if len(points):
            lo = np.minimum(lo, points.min(axis=0))
            hi = np.maximum(hi, points.max(axis=0))
    if not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)):
        raise ValueError("cannot fit a camera: the sequence has no finite vertices")
    return lo, hi


def _normalized(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def fit_camera(bounds_min: np.ndarray, bounds_max: np.ndarray, config: RenderConfig) -> Camera:
    """A camera looking at the box center along -view_direction, as close as framing allows.

    Every corner of the box must lie inside the frustum shrunk by `margin`: for a corner at
    offset (x, y, z) in camera axes (z toward the camera) and eye distance d from the box
    center, |x| <= (d - z) tan(fov_x / 2) / margin, likewise for y. The smallest such d is exact
    for a box, so the framing is tight and the same for every frame that uses this camera.
    """
    lo, hi = np.asarray(bounds_min, np.float64), np.asarray(bounds_max, np.float64)
    if lo.shape != (3,) or hi.shape != (3,) or np.any(hi < lo):
        raise ValueError(f"bounds must be two 3-vectors with min <= max, got {lo} and {hi}")
    center = (lo + hi) / 2
    toward_camera = _normalized(np.asarray(config.view_direction, np.float64))
    right = np.cross(np.asarray(config.up, np.float64), toward_camera)
    if np.linalg.norm(right) < 1e-8:
        raise ValueError(f"up {config.up} is parallel to view_direction {config.view_direction}")
    right = _normalized(right)
    up = np.cross(toward_camera, right)

    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    offsets = corners - center  # [8, 3]
    x, y, z = offsets @ right, offsets @ up, offsets @ toward_camera
    tan_y = np.tan(np.radians(config.fov_y_degrees) / 2)
    tan_x = tan_y * config.width / config.height
    distance = float(np.max(np.maximum(z + np.abs(x) * config.margin / tan_x, z + np.abs(y) * config.margin / tan_y)))
    extent = float(np.linalg.norm(hi - lo))
    distance = max(distance, 1e-3 * max(extent, 1e-6) + float(z.max()))  # degenerate (flat/point) boxes
    eye = center + distance * toward_camera

    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = right, up, toward_camera
    view[:3, 3] = -view[:3, :3] @ eye

    pad = 0.05 * extent + 1e-6
    near = max(distance - float(z.max()) - pad, 1e-3 * distance)
    far = distance - float(z.min()) + pad
    f = 1.0 / tan_y
    projection = np.zeros((4, 4))
    projection[0, 0] = f * config.height / config.width
    projection[1, 1] = f
    projection[2, 2] = (far + near) / (near - far)
    projection[2, 3] = 2 * far * near / (near - far)
    projection[3, 2] = -1.0
    return Camera(view=view, projection=projection)


# ---------------------------------------------------------------- contexts


_BACKEND_HELP = (
    "CPU rendering needs Mesa's EGL (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri); "
    "GPU rendering needs the NVIDIA driver's EGL (libEGL_nvidia). If libEGL lives in an unusual place, "
    "point GLCONTEXT_LINUX_LIBEGL at it; pick a GPU with GLCONTEXT_DEVICE_INDEX or "
    "RenderConfig.egl_device_index. Fallback: RenderConfig(backend='osmesa') with apt package libosmesa6."
)


def _egl_context(device_index: int | None) -> moderngl.Context:
    settings: dict = {"backend": "egl", "require": 330}
    if device_index is not None:
        settings["device_index"] = device_index
    if not os.environ.get("GLCONTEXT_LINUX_LIBEGL") and ctypes.util.find_library("EGL") is None:
        raise RenderBackendError(f"no libEGL found on this system. {_BACKEND_HELP}")
    try:
        return moderngl.create_standalone_context(**settings)
    except Exception as error:  # glcontext raises bare Exceptions with the EGL call that failed
        raise RenderBackendError(f"could not create an EGL OpenGL 3.3 context ({error}). {_BACKEND_HELP}") from error


class _OSMesaLoader:
    """moderngl context loader over Mesa's OSMesa (software rendering without EGL or X)."""

    _FORMAT, _DEPTH_BITS, _PROFILE, _CORE = 0x22, 0x30, 0x33, 0x34
    _MAJOR, _MINOR, _RGBA, _UNSIGNED_BYTE = 0x36, 0x37, 0x1908, 0x1401

    def __init__(self) -> None:
        path = ctypes.util.find_library("OSMesa") or "libOSMesa.so.8"
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as error:
            raise RenderBackendError(f"OSMesa library not found ({error}); apt-get install libosmesa6") from error
        lib = self._lib
        lib.OSMesaCreateContextAttribs.restype = ctypes.c_void_p
        lib.OSMesaCreateContextAttribs.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_void_p]
        lib.OSMesaMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_int]
        lib.OSMesaGetProcAddress.restype = ctypes.c_void_p
        lib.OSMesaGetProcAddress.argtypes = [ctypes.c_char_p]
        lib.OSMesaDestroyContext.argtypes = [ctypes.c_void_p]
        attribs = [self._FORMAT, self._RGBA, self._DEPTH_BITS, 24, self._PROFILE, self._CORE,
                   self._MAJOR, 3, self._MINOR, 3, 0]  # fmt: skip
        self._context = lib.OSMesaCreateContextAttribs((ctypes.c_int * len(attribs))(*attribs), None)
        if not self._context:
            raise RenderBackendError(f"OSMesa ({path}) could not create an OpenGL 3.3 core context")
        # OSMesa needs a bound client buffer; all rendering goes to our own framebuffer objects.
        self._buffer = (ctypes.c_ubyte * 16)()
        self.__enter__()

    def __enter__(self) -> None:
        if not self._lib.OSMesaMakeCurrent(self._context, self._buffer, self._UNSIGNED_BYTE, 2, 2):
            raise RenderBackendError("OSMesaMakeCurrent failed")

    def __exit__(self, *exc: object) -> None:
        pass  # OSMesa has no "release current"; the next __enter__ rebinds

    def load_opengl_function(self, name: str) -> int:
        return self._lib.OSMesaGetProcAddress(name.encode()) or 0

    def release(self) -> None:
        if self._context:
            self._lib.OSMesaDestroyContext(self._context)
            self._context = None


def _osmesa_context() -> moderngl.Context:
    # moderngl.init_context accepts a custom loader but makes it the process-wide default
    # context; that is harmless here because every Renderer keeps and uses its own context.
    moderngl.init_context(_OSMesaLoader())
    return moderngl.get_context()


def create_headless_context(backend: str = "egl", egl_device_index: int | None = None) -> moderngl.Context:
    """An offscreen OpenGL >= 3.3 context; raises RenderBackendError saying what is missing."""
    if backend == "egl":
        return _egl_context(egl_device_index)
    if backend == "osmesa":
        return _osmesa_context()
    if backend == "auto":
        try:
            return _egl_context(egl_device_index)
        except RenderBackendError as egl_error:
            try:
                return _osmesa_context()
            except RenderBackendError as osmesa_error:
                raise RenderBackendError(f"EGL: {egl_error} | OSMesa: {osmesa_error}") from osmesa_error
    raise ValueError(f"unknown render backend {backend!r}; use 'egl', 'osmesa' or 'auto'")


# ---------------------------------------------------------------- renderer

_VERTEX_SHADER = """
#version 330
uniform mat4 u_view;
uniform mat4 u_projection;
in vec3 in_position;
in vec3 in_normal;
out vec3 v_normal;  // camera space
void main() {
    v_normal = mat3(u_view) * in_normal;  // view is rigid, so no inverse-transpose needed
    gl_Position = u_projection * u_view * vec4(in_position, 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 u_color;
uniform vec3 u_key_direction;   // camera space, toward the light
uniform vec3 u_fill_direction;
uniform vec3 u_rim_direction;
in vec3 v_normal;
out vec4 f_color;
void main() {
    float len = length(v_normal);
    vec3 n = len > 1e-8 ? v_normal / len : vec3(0.0, 0.0, 1.0);
    // Two-sided: marching-cubes meshes may be wound either way; light the side we see.
    if (!gl_FrontFacing) n = -n;
    // Soft (wrapped) key and fill: the terminator is a gradient, not a line, as under a softbox.
    float key = max((dot(n, u_key_direction) + 0.35) / 1.35, 0.0);
    float fill = max((dot(n, u_fill_direction) + 0.5) / 1.5, 0.0);
    // Rim from behind: brightens the silhouette (grazing normals facing the rim light).
    float grazing = pow(1.0 - max(n.z, 0.0), 2.5);
    float rim = grazing * max(dot(n, u_rim_direction), 0.0);
    vec3 half_vector = normalize(u_key_direction + vec3(0.0, 0.0, 1.0));
    float specular = pow(max(dot(n, half_vector), 0.0), 24.0);
    vec3 shade = u_color * (0.16 + 0.70 * key * key + 0.22 * fill) + vec3(0.55 * rim + 0.05 * specular);
    f_color = vec4(clamp(shade, 0.0, 1.0), 1.0);
}
"""

# Lights are fixed relative to the camera, so any view direction is lit the same way:
# soft key from upper left front, soft fill from the right, rim from behind upper right.
_KEY_DIRECTION = _normalized(np.array([-0.45, 0.55, 0.70]))
_FILL_DIRECTION = _normalized(np.array([0.70, -0.10, 0.45]))
_RIM_DIRECTION = _normalized(np.array([0.55, 0.45, -0.70]))


SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer")


def is_software_renderer(gl_renderer: str) -> bool:
    """True for Mesa's CPU rasterizers (GL_RENDERER "llvmpipe (LLVM ...)" and the like)."""
    return any(name in gl_renderer.lower() for name in SOFTWARE_RENDERERS)


class Renderer:
    """Offscreen renderer, created once and reused for every frame of every sequence.

    Fixed-topology sequences upload their faces once and only the vertices (and normals) per
    frame; when the faces change (NPHM marching-cubes meshes) they are uploaded again.
    """

    def __init__(self, config: RenderConfig = RenderConfig()) -> None:
        if config.width <= 0 or config.height <= 0:
            raise ValueError(f"render size must be positive, got {config.width}x{config.height}")
        self.config = config
        self.camera: Camera | None = None
        ctx = create_headless_context(config.backend, config.egl_device_index)
        self._ctx = ctx
        self.gl_renderer: str = ctx.info["GL_RENDERER"]
        size = (config.width, config.height)
        wanted = config.msaa_samples
        if wanted is None:
            wanted = 0 if is_software_renderer(self.gl_renderer) else 4
        samples = min(wanted, ctx.max_samples) if wanted > 1 else 0
        self.msaa_samples = samples
        self._draw_fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(size, 4, samples=samples)],
            depth_attachment=ctx.depth_renderbuffer(size, samples=samples),
        )
        # Multisampled buffers cannot be read directly; resolve into a plain one.
        self._read_fbo = ctx.framebuffer(color_attachments=[ctx.renderbuffer(size, 4)]) if samples else self._draw_fbo
        self._program = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self._program["u_color"].value = tuple(config.color)
        self._program["u_key_direction"].value = tuple(_KEY_DIRECTION)
        self._program["u_fill_direction"].value = tuple(_FILL_DIRECTION)
        self._program["u_rim_direction"].value = tuple(_RIM_DIRECTION)
        self._vertex_buffer = ctx.buffer(reserve=4)
        self._index_buffer = ctx.buffer(reserve=4)
        self._vertex_array = ctx.vertex_array(
            self._program,
            [(self._vertex_buffer, "3f 3f", "in_position", "in_normal")],
            index_buffer=self._index_buffer,
            index_element_size=4,
        )
        self._faces: np.ndarray | None = None  # what the index buffer holds now

    # -- camera

    def fit_camera(self, bounds_min: np.ndarray, bounds_max: np.ndarray) -> Camera:
        """Fix the camera for the coming frames to frame this box."""
        self.camera = fit_camera(bounds_min, bounds_max, self.config)
        return self.camera

    def fit_camera_to_sequence(self, vertex_arrays: Iterable[np.ndarray]) -> Camera:
        return self.fit_camera(*sequence_bounds(vertex_arrays))

    # -- drawing

    def _upload_faces(self, faces: np.ndarray) -> None:
        if self._faces is not None and faces.shape == self._faces.shape and np.array_equal(faces, self._faces):
            return
        data = np.ascontiguousarray(faces, dtype=np.uint32)
        if data.nbytes > self._index_buffer.size:
            self._index_buffer.orphan(data.nbytes)
        self._index_buffer.write(data)
        self._faces = faces.copy()

    def render(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """One shaded frame [H, W, 3] uint8 of the mesh with the current camera."""
        if self.camera is None:
            raise RuntimeError("Renderer has no camera: call fit_camera(...) or fit_camera_to_sequence(...) first")
        vertices = np.asarray(vertices)
        faces = np.asarray(faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"vertices must be [V, 3], got {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {faces.shape}")
        if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise ValueError(f"faces index vertices 0..{len(vertices) - 1}, found index {faces.max()} or {faces.min()}")

        with self._ctx:
            self._upload_faces(faces)
            interleaved = np.empty((len(vertices), 6), dtype=np.float32)  # position, normal
            interleaved[:, :3] = vertices
            interleaved[:, 3:] = vertex_normals(vertices.astype(np.float64, copy=False), faces)
            if interleaved.nbytes > self._vertex_buffer.size:
                self._vertex_buffer.orphan(interleaved.nbytes)
            self._vertex_buffer.write(interleaved)

            self._program["u_view"].write(self.camera.view.T.astype("f4").tobytes())  # GL is column-major
            self._program["u_projection"].write(self.camera.projection.T.astype("f4").tobytes())
            self._draw_fbo.use()
            self._draw_fbo.clear(*self.config.background, 1.0)
            self._ctx.enable(moderngl.DEPTH_TEST)
            self._ctx.disable(moderngl.CULL_FACE)
            if len(faces):
                self._vertex_array.render(moderngl.TRIANGLES, vertices=3 * len(faces))
            if self._read_fbo is not self._draw_fbo:
                self._ctx.copy_framebuffer(self._read_fbo, self._draw_fbo)
            pixels = self._read_fbo.read(components=3, alignment=1)
        frame = np.frombuffer(pixels, dtype=np.uint8).reshape(self.config.height, self.config.width, 3)
        return frame[::-1].copy()  # GL rows start at the bottom

    def release(self) -> None:
        self._ctx.release()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------- sequences and panels


def render_sequence(
    renderer: Renderer,
    frames: Iterable[MeshFrame],
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Render (vertices, faces) frames one by one with one camera for the whole sequence.

    The camera is fitted to `bounds` when given, else to all frames (which must then be a
    re-iterable Sequence, since they are read twice).
    """
    if bounds is None:
        if not isinstance(frames, Sequence):
            raise ValueError("render_sequence needs bounds=(min, max) when frames is a one-pass iterator")
        bounds = sequence_bounds(vertices for vertices, _ in frames)
    renderer.fit_camera(*bounds)
    for vertices, faces in frames:
        yield renderer.render(vertices, faces)


def _draw_label(panel: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(panel)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, panel.shape[0] // 24))
    left, _top, right, _bottom = draw.textbbox((0, 0), text, font=font)
    x = (panel.shape[1] - (right - left)) // 2
    y = panel.shape[0] // 40
    draw.text((x, y), text, fill=(235, 235, 235), font=font)
    return np.asarray(image)


def side_by_side(left: np.ndarray, right: np.ndarray, labels: tuple[str, str] | None = None) -> np.ndarray:
    """Two equal-sized frames [H, W, 3] next to each other -> [H, 2W, 3], optionally captioned."""
    if left.shape != right.shape:
        raise ValueError(f"side-by-side panels must have the same shape, got {left.shape} and {right.shape}")
    if labels is not None:
        left, right = _draw_label(left, labels[0]), _draw_label(right, labels[1])
    return np.concatenate([left, right], axis=1)
