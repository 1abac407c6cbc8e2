"""A fixed "FLAME-like" mesh topology for the analytic head, shared by every identity and frame.

Built once by marching cubes of the average head with the mouth half open, so the lips are
separate sheets (like FLAME's mouth slit) and opening the jaw parts them instead of stretching a
membrane across the mouth. Every vertex is mapped back to canonical space with the head's
backward deformation; a frame is then the forward deformation of those canonical vertices, which
keeps the fixed-topology mesh on the SDF surface for any expression (within a small tolerance;
vertices inside the mouth pocket fold into the closed lips when the mouth shuts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from models.heads.analytic import EXPRESSION_DIMS, AnalyticHead
from ops.geometry.meshing import extract_mesh

TOPOLOGY_NAME = "analytic_head_v1"
TEMPLATE_JAW_OPEN = 1.0  # mouth opening the topology is cut at (lips apart by ~2 template voxels)
_TEMPLATE_BOUNDS = ((-0.36, -0.48, -0.50), (0.36, 0.62, 0.40))  # tight around the head
_TEMPLATE_RESOLUTION = 46  # ~6,700 vertices (FLAME: 5,023): smooth lips, eyes and chin


@dataclass(frozen=True)
class DemoTopology:
    name: str
    faces: np.ndarray  # [F, 3] int32
    canonical_vertices: np.ndarray  # [V, 3] float32, average head, canonical space
    lip: np.ndarray  # [L] int64 vertex indices of the lips
    upper_face: np.ndarray  # [U] int64 vertex indices of forehead, brows, eyes, nose bridge

    @property
    def n_vertices(self) -> int:
        return len(self.canonical_vertices)


def template_expression(head: AnalyticHead) -> torch.Tensor:
    expression = torch.zeros(head.expression_dim)
    expression[EXPRESSION_DIMS["jaw_open"]] = TEMPLATE_JAW_OPEN
    return expression


def build_demo_topology(head: AnalyticHead) -> DemoTopology:
    """Marching cubes of the average head at the template pose, largest component, mapped to canonical."""
    identity = torch.zeros(head.identity_dim)
    expression = template_expression(head)
    mesh = extract_mesh(head, identity, expression, resolution=_TEMPLATE_RESOLUTION, bounds=_TEMPLATE_BOUNDS)
    vertices, faces = _largest_component(mesh.vertices, mesh.faces)
    with torch.inference_mode():
        canonical = head.deform_points_backward(torch.from_numpy(vertices), expression).numpy()
    x, y, z = canonical.T
    lip = np.flatnonzero((np.abs(x) < 0.095) & (y > -0.165) & (y < -0.05) & (z > 0.20))
    upper_face = np.flatnonzero((y > 0.05) & (z > 0.12) & (np.abs(x) < 0.22))
    return DemoTopology(TOPOLOGY_NAME, faces, canonical.astype(np.float32), lip, upper_face)


def _largest_component(
    vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.005
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the head and the parts of it big enough to matter (the eyeballs, separate pieces as in
    FLAME), drop specks and degenerate faces, reindex."""
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels[faces[:, 0]])
    keep = sizes >= max(1, min_fraction * len(faces))
    keep[sizes.argmax()] = True
    faces = faces[keep[labels[faces[:, 0]]]]
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used].astype(np.float32), remap[faces].astype(np.int32)


def identity_canonical_vertices(
    head: AnalyticHead, topology: DemoTopology, identity: torch.Tensor, steps: int = 4
) -> np.ndarray:
    """The topology's vertices fitted to one identity's head, in canonical space. -> [V, 3]

    The average template is posed at the template expression (mouth open, so the lips stay
    apart), pulled onto this identity's surface by Newton steps along the SDF gradient (part
    sizes differ by a few percent, so the correspondence barely slides), then mapped back.
    """
    expression = template_expression(head)
    identity = torch.as_tensor(identity, dtype=torch.float32)
    with torch.inference_mode():
        posed = head.deform_points_forward(torch.from_numpy(topology.canonical_vertices), identity, expression)
    posed = posed.clone()
    for _ in range(steps):
        points = posed.detach().requires_grad_(True)
        distance = head.sdf(points, identity, expression)
        (gradient,) = torch.autograd.grad(distance.sum(), points)
        step = distance[:, None] * gradient / (gradient * gradient).sum(1, keepdim=True).clamp_min(1e-6)
        posed = (points - step.clamp(-0.02, 0.02)).detach()
    with torch.inference_mode():
        return head.deform_points_backward(posed, expression).numpy().astype(np.float32)


def pose_vertices(
    head: AnalyticHead, canonical_vertices: np.ndarray, identity: torch.Tensor, expression: torch.Tensor
) -> np.ndarray:
    """Fixed-topology vertices for one frame: forward deformation of the canonical vertices. -> [V, 3]"""
    with torch.inference_mode():
        posed = head.deform_points_forward(
            torch.from_numpy(canonical_vertices), torch.as_tensor(identity), torch.as_tensor(expression)
        )
    return posed.numpy().astype(np.float32)
