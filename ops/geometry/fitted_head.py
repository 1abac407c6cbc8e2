"""Fit an NPHM-architecture network to another head's SDF (the analytic demo head): a realistic NPHM.

The result has the default NPHMConfig size (4.4 M parameters) and NPHM's exact forward pass, so
meshing and animation timings pay the real network's cost, and its zero set is a head (a random
NPHM's fills the grid). It answers one identity (the code it was fitted with, zeros by default) and
is trained on the target's expression dimensions (jaw opening, lips, brows, blink, smile); the
deformation needs ~1,500 steps to follow them (README, "NPHM decoding and meshing").

- Anchors: 39 points on the target's neutral surface, spread over the whole head by farthest-point
  sampling, with NPHM's left/right pairs mirrored in x (the pair members share weights and see
  mirrored coordinates) and the rest on the midline. The anchor MLP is zeroed (no offsets).
- Samples: target-surface points (marching cubes of the target) plus Gaussian noise at three
  scales, and uniform points in the grid box; targets clamped to +-CLAMP as in DeepSDF.
- Stage 1 fits the ensemble to the neutral head (the deformation starts at zero); stage 2 fits
  the deformation and the ensemble together on random expressions (and neutral ones).
- Training evaluates each member only where its blending weight exceeds TRAIN_SKIP_BELOW (about
  7 of 39 members per point), the fitted field is then evaluated exactly by NPHM.sdf.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.heads.base import HeadModel
from models.heads.deepsdf import folded_deepsdf_forward
from models.heads.nphm import NPHM, NPHMConfig

CLAMP = 0.1  # DeepSDF's clamp of the loss to the band around the surface
NOISE_SCALES = (0.004, 0.02, 0.08)
UNIFORM_SHARE = 0.15
TRAIN_SKIP_BELOW = 1e-4
FACE_FRONT_Z = 0.05  # NPHM axes: the face looks along +z


@dataclass(frozen=True)
class FitSettings:
    neutral_steps: int = 600
    expression_steps: int = 1500
    neutral_points_per_step: int = 2048
    points_per_step: int = 1024
    expressions_per_step: int = 4
    learning_rate: float = 1e-3  # the ensemble's; halved in stage 2
    # The deformation's: its pre-activations are ~0.03 (512 wide) and softplus(beta=100) is nearly a
    # ReLU, so Adam at 1e-3 kills its last hidden layer within a few dozen steps (measured).
    deformation_learning_rate: float = 2e-4
    # Its output layer starts at zero (neutral for every code) and, at 2e-4, stays so small that the
    # hidden layers get no gradient to learn the expression from (measured): it learns faster.
    deformation_output_learning_rate: float = 2e-3
    face_share: float = 0.5  # of stage 2's points: from the front of the face, where expressions act
    pool_expressions: int = 24  # target meshes to sample surface points from (one neutral)
    mesh_resolution: int = 64
    seed: int = 0


# Expression dims the target uses and the ranges to draw from (the analytic head's named dims).
def expression_ranges() -> dict[int, tuple[float, float]]:
    from models.heads.analytic import EXPRESSION_DIMS

    ranges = {"jaw_open": (-0.1, 1.0), "blink": (-0.3, 1.0)}
    return {dim: ranges.get(name, (-1.0, 1.0)) for name, dim in EXPRESSION_DIMS.items()}


def anchor_layout(surface: np.ndarray, n_anchors: int, n_pairs: int, seed: int = 0) -> np.ndarray:
    """[K, 3]: pairs (x, y, z), (-x, y, z) first (NPHM's order), then midline anchors (x = 0).

    Farthest-point sampling over the surface: the pairs from the x > 0 half (a pair covers a point
    and its mirror image), the midline ones from a band around x = 0 that the pairs left uncovered.
    """
    rng = np.random.default_rng(seed)
    right = surface[surface[:, 0] > 0.04]
    mirrored = np.concatenate([surface, surface * [-1.0, 1.0, 1.0]])
    chosen = _farthest_points(right, n_pairs, rng, mirrored_distance=True)
    pairs = np.stack([chosen, chosen * [-1.0, 1.0, 1.0]], axis=1).reshape(-1, 3)
    near_midline = np.abs(mirrored[:, 0]) <= max(0.02, float(np.quantile(np.abs(mirrored[:, 0]), 0.02)))
    band = mirrored[near_midline] * [0.0, 1.0, 1.0]
    midline = _farthest_points(band, n_anchors - 2 * n_pairs, rng, taken=pairs)
    return np.concatenate([pairs, midline]).astype(np.float32)


def _farthest_points(
    candidates: np.ndarray, count: int, rng: np.random.Generator, mirrored_distance: bool = False, taken=None
) -> np.ndarray:
    def distance_to(p: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(candidates - p, axis=1)
        if mirrored_distance:  # a pair also covers the mirror image of its point
            d = np.minimum(d, np.linalg.norm(candidates - p * [-1.0, 1.0, 1.0], axis=1))
        return d

    nearest = np.full(len(candidates), np.inf)
    for p in taken if taken is not None else []:
        nearest = np.minimum(nearest, distance_to(p))
    picks = []
    for _ in range(count):
        i = int(np.argmax(nearest)) if np.isfinite(nearest).any() else int(rng.integers(len(candidates)))
        picks.append(candidates[i])
        nearest = np.minimum(nearest, distance_to(candidates[i]))
    return np.asarray(picks)


class SurfacePool:
    """Surface points of the target for a pool of expression codes (index 0: neutral)."""

    def __init__(self, target: HeadModel, identity: Tensor, settings: FitSettings, rng: np.random.Generator):
        from ops.geometry.meshing import extract_mesh

        self.expressions = [torch.zeros(target.expression_dim)]
        for _ in range(settings.pool_expressions - 1):
            self.expressions.append(random_expression(target.expression_dim, rng))
        self.surfaces = [
            torch.from_numpy(extract_mesh(target, identity, e, resolution=settings.mesh_resolution).vertices)
            for e in self.expressions
        ]
        # the front of the face (z > FACE_FRONT_Z: lips, jaw, cheeks, eyes, brows)
        self.faces = [surface[surface[:, 2] > FACE_FRONT_Z] for surface in self.surfaces]


def random_expression(dim: int, rng: np.random.Generator) -> Tensor:
    """The target's named dims uniform in their ranges (each active with probability 0.6), the rest small."""
    code = rng.normal(0.0, 0.02, dim)
    for index, (low, high) in expression_ranges().items():
        code[index] = rng.uniform(low, high) if rng.random() < 0.6 else 0.0
    return torch.tensor(code, dtype=torch.float32)


def sample_points(surface: Tensor, count: int, bounds, generator: torch.Generator) -> Tensor:
    n_uniform = int(count * UNIFORM_SHARE)
    n_near = count - n_uniform
    picks = surface[torch.randint(len(surface), (n_near,), generator=generator)]
    scales = torch.tensor(NOISE_SCALES)[torch.randint(len(NOISE_SCALES), (n_near, 1), generator=generator)]
    near = picks + torch.randn(n_near, 3, generator=generator) * scales
    low, high = torch.tensor(bounds[0]), torch.tensor(bounds[1])
    uniform = low + torch.rand(n_uniform, 3, generator=generator) * (high - low)
    return torch.cat([near, uniform])


def training_sdf(model: NPHM, points: Tensor, identity: Tensor, expressions: Tensor, deform: bool = True) -> Tensor:
    """Differentiable inference field: points [E, n, 3] posed, expressions [E, dim] -> sdf [E * n].

    As NPHM.forward, for E expressions at once, with each member evaluated only where it has weight.
    deform=False skips the deformation (stage 1, while it is still zero).
    """
    ident = model.identity
    anchors = ident.anchors(identity)
    canonical = points.reshape(-1, 3)
    if deform:
        net, n_expr = model.deformation, expressions.shape[0]
        latent = torch.stack([net.condition(identity, anchors, e) for e in expressions])
        layers = [
            (lay.weight[None].expand(n_expr, -1, -1), lay.bias[None].expand(n_expr, -1)) for lay in net.mlp.layers
        ]
        canonical = (points + folded_deepsdf_forward(points, latent, layers, net.mlp.skip_layer)).reshape(-1, 3)

    weights = ident.blend_weights(canonical, anchors)  # [N, K + 1]
    latents = ident.member_latents(identity)
    # unbind once: slicing a stored weight per member would give each slice a full-size zero gradient
    stored = [(layer.weight.unbind(0), layer.bias.unbind(0)) for layer in ident.members.layers]
    n_pairs = ident.n_symmetric_pairs
    out = weights[:, -1] * ident.background_sdf
    for k in range(ident.n_anchors):
        index = (weights[:, k].detach() > TRAIN_SKIP_BELOW).nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        local = canonical[index] - anchors[k]
        if k < 2 * n_pairs and k % 2 == 1:
            local = local * torch.tensor([-1.0, 1.0, 1.0])
        s = k // 2 if k < 2 * n_pairs else k - n_pairs  # the stored weight set of member k
        member = [(w[s][None], b[s][None]) for w, b in stored]
        sdf = folded_deepsdf_forward(local[None], latents[k : k + 1], member, ident.members.skip_layer)[0, :, 0]
        out = out.index_add(0, index, weights[index, k] * sdf)
    return out


def fit_nphm(
    target: HeadModel,
    settings: FitSettings = FitSettings(),
    identity: Tensor | None = None,
    config: NPHMConfig | None = None,
    progress: Callable[[str], None] = print,
    start: NPHM | None = None,
) -> tuple[NPHM, dict]:
    """-> (the fitted NPHM in eval mode, a report: losses, errors on held-out points, seconds).

    `start`: continue from this model's ensemble and anchors (e.g. with neutral_steps=0).
    """
    from ops.geometry.meshing import NPHM_BOUNDS

    started = time.perf_counter()
    config = config or NPHMConfig()
    if config.expression_dim <= max(expression_ranges()):
        raise ValueError(f"fit_nphm: expression_dim {config.expression_dim} misses the target's named dims")
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    identity = torch.zeros(config.identity_dim) if identity is None else identity.float()
    target_identity = torch.zeros(target.identity_dim)
    pool = SurfacePool(target, target_identity, settings, rng)
    progress(f"target surfaces: {len(pool.surfaces)} expressions ({time.perf_counter() - started:.1f} s)")

    model = NPHM(config)
    with torch.no_grad():
        if start is not None:  # continue from its ensemble, anchors and deformation
            model.load_state_dict(start.state_dict())
        else:
            anchors = anchor_layout(pool.surfaces[0].numpy(), config.n_anchors, config.n_symmetric_pairs)
            model.identity.anchor_mean.copy_(torch.from_numpy(anchors))
        last = model.identity.anchor_mlp[-1]
        last.weight.zero_()
        last.bias.zero_()
    model.eval()  # the inference field (constant background member, no code noise) is what is fitted

    def target_sdf(points: Tensor, expression: Tensor) -> Tensor:
        return target.sdf(points, target_identity, expression)

    def step_loss(expression_ids: list[int], deform: bool) -> Tensor:
        n = (settings.points_per_step if deform else settings.neutral_points_per_step) // len(expression_ids)
        n_face = int(n * settings.face_share) if deform else 0
        points = torch.stack(
            [
                torch.cat(
                    [
                        sample_points(pool.faces[i], n_face, NPHM_BOUNDS, generator),
                        sample_points(pool.surfaces[i], n - n_face, NPHM_BOUNDS, generator),
                    ]
                )
                for i in expression_ids
            ]
        )
        expressions = torch.stack([pool.expressions[i] for i in expression_ids])  # the target's codes
        with torch.no_grad():
            truth = torch.cat([target_sdf(p, e) for p, e in zip(points, expressions, strict=True)])
        # the model's code: the target's first dims (where its named dims are), 200 of 200 at NPHM size
        predicted = training_sdf(model, points, identity, expressions[:, : config.expression_dim], deform)
        return (predicted.clamp(-CLAMP, CLAMP) - truth.clamp(-CLAMP, CLAMP)).abs().mean()

    report: dict = {"settings": settings.__dict__ | {}, "stages": {}}
    members = list(model.identity.members.parameters())
    output = list(model.deformation.mlp.layers[-1].parameters())
    deformation = [p for p in model.deformation.parameters() if all(p is not q for q in output)]
    lr, lr_deformation = settings.learning_rate, settings.deformation_learning_rate
    stages = [
        ("neutral", settings.neutral_steps, [{"params": members, "lr": lr}], lambda: [0], False),
        (
            "expressions",
            settings.expression_steps,
            [
                {"params": members, "lr": lr / 2},
                {"params": deformation, "lr": lr_deformation},
                {"params": output, "lr": settings.deformation_output_learning_rate},
            ],
            lambda: [0, *rng.integers(1, len(pool.expressions), settings.expressions_per_step - 1).tolist()],
            True,
        ),
    ]
    model.requires_grad_(False)
    for name, steps, groups, pick, deform in stages:
        if steps == 0:
            continue
        for group in groups:
            for parameter in group["params"]:
                parameter.requires_grad_(True)
        optimizer = torch.optim.Adam(groups)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s, n=steps: 0.5 * (1 + math.cos(math.pi * s / n))
        )
        stage_start, losses = time.perf_counter(), []
        for step in range(steps):
            loss = step_loss(pick(), deform)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if step % 50 == 0 or step == steps - 1:
                progress(f"{name} step {step + 1}/{steps}: clamped L1 {np.mean(losses[-50:]):.5f}")
        report["stages"][name] = {
            "first_loss": losses[0],
            "steps": steps,
            "final_loss": float(np.mean(losses[-20:])),
            "seconds": time.perf_counter() - stage_start,
        }
    model.requires_grad_(False)
    report["held_out"] = held_out_errors(model, target, identity, target_identity, pool, generator)
    report["seconds"] = time.perf_counter() - started
    return model.eval(), report


@torch.no_grad()
def held_out_errors(model: NPHM, target: HeadModel, identity, target_identity, pool: SurfacePool, generator) -> dict:
    """Mean |sdf error| within 0.01 of the target surface, neutral and over the other expressions."""
    from ops.geometry.meshing import NPHM_BOUNDS

    def error(index: int) -> float:
        points = sample_points(pool.surfaces[index], 4000, NPHM_BOUNDS, generator)
        truth = target.sdf(points, target_identity, pool.expressions[index])
        near = truth.abs() < 0.01
        predicted = model.sdf(points[near], identity, pool.expressions[index][: model.expression_dim])
        return float((predicted - truth[near]).abs().mean())

    others = [error(i) for i in range(1, min(len(pool.expressions), 9))]
    return {"neutral_near_surface_l1": error(0), "expressions_near_surface_l1": float(np.mean(others))}
