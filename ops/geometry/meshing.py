"""Head SDF -> triangle mesh by marching cubes, and temporal smoothing of vertex sequences.

Two ways to fill the SDF grid, giving the same surface:

- dense: every grid point is evaluated (the NPHM reference procedure);
- coarse_to_fine: evaluate a grid with stride 2^L, then halve the stride L times, evaluating only
  points in cells near the surface (a sign change, or |sdf| below `safety` x the cell diagonal,
  dilated by one cell). Elsewhere a point takes the value of a coarse corner of its cell: every
  corner there has the same sign and |sdf| > the cell diagonal, so for a distance function
  (Lipschitz 1) no surface crosses the cell and marching cubes emits the same triangles as
  dense. `safety` > 1 covers heads whose deformation stretches distances (Lipschitz > 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from models.heads.base import NPHM_GRID_MAX, NPHM_GRID_MIN, HeadModel

Bounds = tuple[tuple[float, float, float], tuple[float, float, float]]
NPHM_BOUNDS: Bounds = (NPHM_GRID_MIN, NPHM_GRID_MAX)
MARCHING_CUBES = ("auto", "skimage", "warp")


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # [V, 3] float32, head space
    faces: np.ndarray  # [F, 3] int32, outward winding
    points_evaluated: int  # SDF evaluations spent on this mesh
    seconds: float  # wall time of grid evaluation + marching cubes


class _GridSampler:
    """Evaluates the head SDF at integer grid indices of an R^3 grid spanning `bounds`, on `device`."""

    def __init__(
        self,
        head: HeadModel,
        identity,
        expression,
        resolution: int,
        bounds: Bounds,
        batch_points: int,
        device: torch.device,
    ):
        identity = torch.as_tensor(identity, dtype=torch.float32)
        expression = torch.as_tensor(expression, dtype=torch.float32)
        field = getattr(head, "field", None)
        if callable(field):  # NPHM: the per-code work once per mesh, batches sized for the device
            self.sdf = field(identity, expression).sdf
        else:
            self.sdf = lambda points: head.sdf(points, identity, expression)
        self.device = device
        self.low = torch.tensor(bounds[0], dtype=torch.float32, device=device)
        high = torch.tensor(bounds[1], dtype=torch.float32, device=device)
        self.spacing = (high - self.low) / (resolution - 1)
        self.batch_points = batch_points
        self.points_evaluated = 0

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [N, 3] int64 grid indices on the device -> sdf [N] float32 on the device."""
        out = torch.empty(len(indices), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            for start in range(0, len(indices), self.batch_points):
                chunk = indices[start : start + self.batch_points]
                points = self.low + chunk.to(torch.float32) * self.spacing
                out[start : start + len(chunk)] = self.sdf(points).to(self.device)
        self.points_evaluated += len(indices)
        return out


def mesh_device(head: HeadModel, device: str | torch.device | None = None) -> torch.device:
    """Where the grid lives: `device`, else the head's own (NPHM's weights), else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device(getattr(head, "device", "cpu"))


def extract_mesh(
    head: HeadModel,
    identity: torch.Tensor | np.ndarray,
    expression: torch.Tensor | np.ndarray,
    resolution: int = 64,
    method: str = "coarse_to_fine",
    bounds: Bounds = NPHM_BOUNDS,
    batch_points: int = 1 << 18,
    levels: int | None = None,
    safety: float = 1.5,
    dilate: bool = False,
    device: str | torch.device | None = None,
    marching_cubes: str = "auto",
) -> Mesh:
    """Marching-cubes mesh of the head's zero level set on a resolution^3 grid over `bounds`.

    `levels`: coarse-to-fine refinements (stride 2^levels at the start); by default chosen so the
    first grid has about 16 points per axis. A cell is refined when its corners change sign or
    min |sdf| < `safety` x half its diagonal (every point of a cell lies within half a diagonal
    of a corner); `dilate` also refines the cells around those. Both methods give identical
    meshes when the SDF's Lipschitz constant stays below `safety`.
    `device`: where grid indices, refinement masks and values live (default: the head's device,
    see mesh_device). `marching_cubes`: "skimage" (CPU), "warp" (NVIDIA Warp, GPU or CPU), or
    "auto": warp for a CUDA grid when warp-lang is installed, else skimage.
    Raises ValueError when no surface crosses the grid.
    """
    if resolution < 4:
        raise ValueError(f"resolution must be >= 4, got {resolution}")
    if method not in ("dense", "coarse_to_fine"):
        raise ValueError(f"method must be 'dense' or 'coarse_to_fine', got {method!r}")
    if marching_cubes not in MARCHING_CUBES:
        raise ValueError(f"marching_cubes must be one of {MARCHING_CUBES}, got {marching_cubes!r}")
    started = time.perf_counter()
    grid_device = mesh_device(head, device)
    sampler = _GridSampler(head, identity, expression, resolution, bounds, batch_points, grid_device)
    if method == "dense":
        volume, mask = _dense_volume(sampler, resolution), None
    else:
        if levels is None:
            levels = max(1, round(math.log2((resolution - 1) / 15)))
        volume, mask = _coarse_to_fine_volume(sampler, resolution, levels, safety, dilate)
    vertices, faces = _marching_cubes(volume, mask, bounds, marching_cubes)
    return Mesh(vertices, faces, sampler.points_evaluated, time.perf_counter() - started)


def _dense_volume(sampler: _GridSampler, resolution: int) -> torch.Tensor:
    device = sampler.device
    volume = torch.empty(resolution**3, dtype=torch.float32, device=device)
    step = max(sampler.batch_points, resolution * resolution)
    for start in range(0, resolution**3, step):
        flat = torch.arange(start, min(start + step, resolution**3), device=device)
        indices = torch.stack([flat // resolution**2, flat // resolution % resolution, flat % resolution], dim=1)
        volume[start : start + len(flat)] = sampler(indices)
    return volume.reshape(resolution, resolution, resolution)


def _lattice(resolution: int, stride: int, device: torch.device) -> torch.Tensor:
    """Grid indices of one level: every stride-th point, the last point always included."""
    count = math.ceil((resolution - 1) / stride) + 1
    return (torch.arange(count, device=device) * stride).clamp_max(resolution - 1)


def _coarse_to_fine_volume(sampler: _GridSampler, resolution: int, levels: int, safety: float, dilate: bool):
    """-> (volume [R,R,R] float32, exact [R,R,R] bool: points whose value was evaluated), on the device."""
    device = sampler.device
    stride = 2**levels
    axis = _lattice(resolution, stride, device)
    values = sampler(torch.cartesian_prod(axis, axis, axis)).reshape(len(axis), len(axis), len(axis))
    exact = torch.ones_like(values, dtype=torch.bool)
    while stride > 1:
        near = _cells_near_surface(values, sampler.spacing * stride, safety, dilate)  # [n-1]^3
        stride //= 2
        fine_axis = _lattice(resolution, stride, device)
        n_fine, n_coarse = len(fine_axis), len(axis)
        # Each fine point starts from a corner of the coarse cell holding it.
        values = _upsample(values, n_fine)
        exact_fine = torch.zeros_like(values, dtype=torch.bool)
        same = (2 * torch.arange(n_coarse, device=device)).clamp_max(n_fine - 1)  # coarse point -> fine index
        exact_fine[same[:, None, None], same[None, :, None], same[None, None, :]] = exact
        todo = _upsample(near, n_fine)
        todo &= ~exact_fine
        where = todo.nonzero()  # [M, 3] fine-lattice indices
        grid_indices = torch.stack([fine_axis[where[:, k]] for k in range(3)], dim=1)
        values[todo] = sampler(grid_indices)
        exact_fine[todo] = True
        exact, axis = exact_fine, fine_axis
    return values, exact


def _upsample(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest 2x upsampling of a cubic grid to size^3: fine point i takes coarse index min(i // 2, n - 1).

    Equal to fancy indexing with those indices, but an expand + reshape instead of three gathers,
    and contiguous whenever `size` is even (marching cubes would otherwise copy the final grid).
    """
    m = (size + 1) // 2  # coarse entries needed
    while grid.shape[0] < m:  # fine points past the last coarse entry repeat it
        grid = torch.cat([grid, grid[-1:]], 0)
        grid = torch.cat([grid, grid[:, -1:]], 1)
        grid = torch.cat([grid, grid[:, :, -1:]], 2)
    grid = grid[:m, :m, :m]
    up = grid[:, None, :, None, :, None].expand(m, 2, m, 2, m, 2).reshape(2 * m, 2 * m, 2 * m)
    return up if 2 * m == size else up[:size, :size, :size]


def _over_cell_corners(values: torch.Tensor, reduce) -> torch.Tensor:
    """Reduce each cell's 8 corner values, one axis at a time: [n]^3 -> [n-1]^3."""
    values = reduce(values[:-1], values[1:])
    values = reduce(values[:, :-1], values[:, 1:])
    return reduce(values[:, :, :-1], values[:, :, 1:])


def _cells_near_surface(values: torch.Tensor, cell_size: torch.Tensor, safety: float, dilate: bool) -> torch.Tensor:
    """Cells (between lattice points) that may hold surface, optionally dilated by one cell."""
    # Every point of a cell is within half its diagonal of some corner.
    threshold = safety * 0.5 * float(cell_size.norm())
    near = (_over_cell_corners(values, torch.minimum) < 0) & (_over_cell_corners(values, torch.maximum) > 0)
    near |= _over_cell_corners(values.abs(), torch.minimum) < threshold
    if not dilate:
        return near
    dilated = torch.nn.functional.max_pool3d(near[None, None].float(), 3, stride=1, padding=1)
    return dilated[0, 0] > 0


def warp_available() -> bool:
    """NVIDIA Warp (`pip install warp-lang`, the `gpu` extra) importable."""
    try:
        import warp  # noqa: F401
    except ImportError:
        return False
    return True


def _marching_cubes(volume: torch.Tensor, mask: torch.Tensor | None, bounds: Bounds, backend: str):
    low, high = float(volume.min()), float(volume.max())
    if not (low < 0.0 < high):
        raise ValueError(
            "no surface inside the grid: the SDF does not change sign "
            f"(min {low:.4f}, max {high:.4f}); check the codes and bounds"
        )
    if backend == "auto":
        backend = "warp" if volume.device.type == "cuda" and warp_available() else "skimage"
    if backend == "warp":
        return _warp_marching_cubes(volume, bounds)
    from skimage.measure import marching_cubes

    # float32 spacing, as the grid points were made (vertices on the box's faces stay inside it)
    corner, far = torch.tensor(bounds[0], dtype=torch.float32), torch.tensor(bounds[1], dtype=torch.float32)
    spacing = ((far - corner) / (volume.shape[0] - 1)).numpy()
    mask_np = None if mask is None else mask.cpu().numpy()
    vertices, faces, _, _ = marching_cubes(
        volume.cpu().numpy(), level=0.0, spacing=tuple(float(s) for s in spacing), mask=mask_np
    )
    # skimage's 'descent' winding points normals toward decreasing values: out of the head.
    return (vertices + np.asarray(bounds[0])).astype(np.float32), faces.astype(np.int32)


def _warp_marching_cubes(volume: torch.Tensor, bounds: Bounds):
    """Warp's marching cubes where the volume is (GPU or CPU); same vertices and winding as skimage.

    Cells whose values were not evaluated (coarse-to-fine) hold a coarse corner's value of the same
    sign, so they emit no triangles: no mask is needed.
    """
    if not warp_available():
        raise ValueError("marching_cubes='warp' needs NVIDIA Warp: pip install warp-lang (the 'gpu' extra)")
    import warp as wp
    from warp.geometry import IsoSurfaceMarchingCubes

    wp.config.quiet = True
    wp.init()
    field = wp.from_torch(volume.contiguous())
    vertices, indices = IsoSurfaceMarchingCubes.extract(field, 0.0, lower=tuple(bounds[0]), upper=tuple(bounds[1]))
    return (
        wp.to_torch(vertices).cpu().numpy().astype(np.float32),
        wp.to_torch(indices).cpu().numpy().reshape(-1, 3).astype(np.int32),
    )
