"""Facial smoothing, FaceTalk's post-processing before marching cubes.

Generated expression codes carry frame-to-frame jitter that shows most on the large, slow parts
of the head (forehead, cheeks, neck), while the mouth must keep every fast movement the speech
asks for. For frame t and a posed point x the smoothed SDF blends two evaluations of the head:

    sdf_t(x) = w(x) * head.sdf(x, identity, code_t) + (1 - w(x)) * head.sdf(x, identity, smooth_t)

with `smooth_t` the codes filtered over time (a Gaussian of `temporal_sigma` frames) and
w(x) = a 3D Gaussian of width `width` centred on the mouth, cut to exactly 0 where it falls
below `cutoff` (and rescaled so it stays continuous): points away from the mouth need one head
evaluation, not two. Only the head's public `sdf` is used, so this works for every head model
(analytic demo head, NPHM). A blend of two signed distance functions with a smooth weight is
continuous and crosses zero between the two surfaces, so marching cubes sees one clean surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from models.heads.base import HeadModel

# The mouth (lip contact line, centred) in NPHM canonical space: y up, the face looks along +z.
MOUTH_CENTRE = (0.0, -0.106, 0.245)


@dataclass(frozen=True)
class FacialSmoothing:
    """Where the mouth is (head space), how far its motion is kept, and how strongly the rest is smoothed."""

    centre: tuple[float, float, float] = MOUTH_CENTRE
    width: float = 0.1  # standard deviation of the spatial Gaussian, head units (the head is ~0.6 wide)
    temporal_sigma: float = 2.0  # standard deviation of the temporal Gaussian, frames
    cutoff: float = 0.01  # w below this is 0: a single head evaluation there

    def __post_init__(self) -> None:
        if len(self.centre) != 3 or not all(math.isfinite(c) for c in self.centre):
            raise ValueError(f"facial smoothing centre must be 3 finite numbers, got {self.centre}")
        if not self.width > 0:
            raise ValueError(f"facial smoothing width must be > 0, got {self.width}")
        if not self.temporal_sigma > 0:
            raise ValueError(f"facial smoothing temporal_sigma must be > 0 frames, got {self.temporal_sigma}")
        if not 0 <= self.cutoff < 1:
            raise ValueError(f"facial smoothing cutoff must be in [0, 1), got {self.cutoff}")

    def weight(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] -> w [N] in [0, 1]: 1 at the mouth centre, 0 beyond the cutoff radius."""
        centre = torch.tensor(self.centre, dtype=points.dtype, device=points.device)
        gaussian = torch.exp(-((points - centre) ** 2).sum(dim=1) / (2 * self.width**2))
        return ((gaussian - self.cutoff) / (1 - self.cutoff)).clamp_min(0.0)

    def smooth_codes(self, codes: np.ndarray) -> np.ndarray:
        """codes [T, D] -> the same filtered over time (edges held, so the first/last frames stay put)."""
        codes = np.asarray(codes, dtype=np.float32)
        if len(codes) < 2:
            return codes.copy()
        return gaussian_filter1d(codes, self.temporal_sigma, axis=0, mode="nearest").astype(np.float32)


class SmoothedFrameHead:
    """A HeadModel for one frame: the head at the frame's raw code near the mouth, at its smoothed
    code elsewhere (see the module docstring). Pass it to `extract_mesh` with the raw code."""

    def __init__(self, head: HeadModel, smoothed_code: np.ndarray | torch.Tensor, smoothing: FacialSmoothing):
        self.head = head
        self.identity_dim = head.identity_dim
        self.expression_dim = head.expression_dim
        self.smoothed_code = torch.as_tensor(np.asarray(smoothed_code, dtype=np.float32))
        self.smoothing = smoothing

    @property
    def device(self) -> torch.device:
        """The wrapped head's device, so meshing keeps its grid there (see meshing.mesh_device)."""
        return torch.device(getattr(self.head, "device", "cpu"))

    def sdf(self, points: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        smoothed = self.smoothed_code.to(expression.device)
        if torch.equal(smoothed, expression):
            return self.head.sdf(points, identity, expression)
        # float32 whatever the head computes in (an autocast head may answer in bf16): the blend and
        # the in-place write need one dtype.
        out = self.head.sdf(points, identity, smoothed).to(torch.float32)
        w = self.smoothing.weight(points.to(torch.float32))
        near = (w > 0).nonzero().squeeze(1)  # only points near the mouth also need the raw code
        if len(near):
            raw = self.head.sdf(points[near], identity, expression).to(torch.float32)
            out[near] = w[near] * raw + (1 - w[near]) * out[near]
        return out


def smoothing_heads(head: HeadModel, codes: np.ndarray, smoothing: FacialSmoothing | None) -> list[HeadModel]:
    """One head per frame of codes [T, D]: `head` itself without smoothing, else a `SmoothedFrameHead`."""
    if smoothing is None:
        return [head] * len(codes)
    smoothed = smoothing.smooth_codes(codes)
    return [SmoothedFrameHead(head, code, smoothing) for code in smoothed]
