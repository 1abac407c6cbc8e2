"""A closed-form head SDF with NPHM's interface: the demo and test stand-in for NPHM.

Axes and scale follow NPHM's canonical space: y up, z toward the viewer (the face looks along +z),
x = the subject's left (viewer's right); the head is about 0.58 wide and sits inside the NPHM grid
box [-0.55, -0.50, -0.95]..[0.55, 0.75, 0.40] (nose tip z ~ 0.34, crown y ~ 0.57, neck cut
y ~ -0.45), so marching cubes over that box gives a closed surface.

Identity: the first `len(IDENTITY_DIMS)` code dimensions scale parts of the head; each enters as
2 * tanh(z / (2 * IDENTITY_CODE_SCALE)), so codes ~ N(0, 0.1^2) give plausible variety, the NPHM
mean code (|z| < 0.01) gives the average head and extreme codes saturate at +-2 "standard" steps.

Expression: the dims in `EXPRESSION_DIMS` (values ~[-1, 1]; 0 is neutral, other dims ignored) act
like NPHM's backward deformation: a posed point is mapped to canonical space, where the neutral
closed-mouth head is evaluated. Forward (canonical -> posed) is: brow lift -> jaw rotation -> lip
shaping. The jaw rotates about a pivot near the ear with a weight that depends only on the angle
around that pivot (and on x and radius, which the rotation preserves), so its inverse is exact.
A backward map cannot tear the closed lips apart, so the mouth gap is carved out in jaw space (like
NPHM, whose canonical space has the mouth open for the same reason). Blink closes the lids in
canonical space: the lids are too thin to move by a smooth deformation at mesh resolution.

Speed: points are handled as three contiguous coordinate tensors (elementwise ops on [N] are far
faster in torch than small reductions over [N, 3]), and each small feature and deformation is
evaluated only for points inside its bounding box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.heads.base import EXPRESSION_DIM, IDENTITY_DIM

IDENTITY_CODE_SCALE = 0.1
IDENTITY_DIMS = {
    "head_width": 0,
    "head_height": 1,
    "head_depth": 2,
    "jaw_width": 3,
    "chin_length": 4,
    "nose_length": 5,
    "nose_width": 6,
    "lip_fullness": 7,
    "eye_spacing": 8,
    "brow_prominence": 9,
}
# Relative change of each part per unit of the squashed identity value (range +-2).
_IDENTITY_GAIN = {
    "head_width": 0.06, "head_height": 0.05, "head_depth": 0.05, "jaw_width": 0.08,
    "chin_length": 0.10, "nose_length": 0.15, "nose_width": 0.15, "lip_fullness": 0.15,
    "eye_spacing": 0.06, "brow_prominence": 0.25,
}  # fmt: skip

EXPRESSION_DIMS = {
    "jaw_open": 0,  # 0 closed, 1 wide open (0.18 rad, lips ~20 mm apart at FLAME scale); negative clenches
    "lip_round": 1,  # 1 rounded and pushed forward ("oo"), -1 slightly flattened
    "lip_stretch": 2,  # 1 wide ("ee"), -1 narrow
    "brow_raise": 3,  # 1 raised, -1 lowered (frown)
    "blink": 4,  # 0 open, 1 closed, negative widens
    "smile": 5,  # 1 mouth corners up and out
    "lip_press": 6,  # 0.5 lips pressed together (p, b, m): the mouth gap closes even with the jaw ajar
    "lip_tuck": 7,  # 0.5 lower lip raised and drawn back under the upper teeth (f, v)
}

JAW_PIVOT_YZ = (0.03, -0.07)  # (y, z) of the jaw hinge axis, parallel to x
JAW_MAX_ANGLE = 0.18  # radians at jaw_open = 1: a wide "a" (~0.9) parts the lips ~18 mm at FLAME scale
_MOUTH_YZ = (-0.106, 0.245)  # lip contact line (y, z) in canonical space
_LIP_BAND = 0.03  # radians over which the jaw weight rises across the lip contact
_CHEEK_BAND = 0.45  # the same on the cheeks, away from the mouth
_CHIN_FADE = (1.0, 1.95)  # radians where the jaw weight falls back to 0 (under chin -> throat)
_JAW_LATERAL_FADE = (0.18, 0.30)  # |x| where the jaw weight falls to 0 (cheeks, ears stay)
_MOUTH_HALF_WIDTH = 0.078


Points = tuple[Tensor, Tensor, Tensor]  # x [N], y [N], z [N]
Vec3 = tuple[float, float, float]


def _squash(identity: Tensor) -> dict[str, float]:
    """Identity code -> relative size factor per named part (1.0 = average head)."""
    factors = {}
    for name, dim in IDENTITY_DIMS.items():
        value = 2.0 * math.tanh(float(identity[dim]) / (2.0 * IDENTITY_CODE_SCALE))
        factors[name] = 1.0 + _IDENTITY_GAIN[name] * value
    return factors


def _expression_values(expression: Tensor) -> dict[str, float]:
    return {name: float(expression[dim]) for name, dim in EXPRESSION_DIMS.items()}


def _split(points: Tensor) -> Points:
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    points = points.to(torch.float32)
    return points[:, 0].contiguous(), points[:, 1].contiguous(), points[:, 2].contiguous()


def _take(p: Points, index: Tensor) -> Points:
    return p[0][index], p[1][index], p[2][index]


def _put(p: Points, index: Tensor, values: Points) -> Points:
    out = (p[0].clone(), p[1].clone(), p[2].clone())
    for axis in range(3):
        out[axis][index] = values[axis]
    return out


# ----------------------------------------------------------------------------- SDF primitives


def _length(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y + z * z)


def _ellipsoid(p: Points, c: Vec3, r: Vec3) -> Tensor:
    """Approximate ellipsoid distance (Quilez): exact on the surface, close to metric near it."""
    qx, qy, qz = (p[0] - c[0]) / r[0], (p[1] - c[1]) / r[1], (p[2] - c[2]) / r[2]
    k0 = _length(qx, qy, qz)
    k1 = _length(qx / r[0], qy / r[1], qz / r[2]).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def _sphere(p: Points, c: Vec3, radius: float) -> Tensor:
    return _length(p[0] - c[0], p[1] - c[1], p[2] - c[2]) - radius


def _capsule(p: Points, a: Vec3, b: Vec3, radius: float) -> Tensor:
    ab = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    ax, ay, az = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    t = ((ax * ab[0] + ay * ab[1] + az * ab[2]) / (ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2)).clamp(0.0, 1.0)
    return _length(ax - t * ab[0], ay - t * ab[1], az - t * ab[2]) - radius


def _smooth_union(a: Tensor, b: Tensor, k: float) -> Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return torch.lerp(b, a, h) - k * h * (1.0 - h)


def _smooth_intersect(a: Tensor, b: Tensor, k: float) -> Tensor:
    """max(a, b) with a rounded edge of size k (the lids' rims)."""
    return -_smooth_union(-a, -b, k)


def _smooth_subtract(a: Tensor, b: Tensor, k: float) -> Tensor:
    """a minus b, with a fillet of size k."""
    return -_smooth_union(-a, b, k)


def _box_distance_bound(p: Points, low: Vec3, high: Vec3) -> Tensor:
    """Chebyshev distance to an axis-aligned box: <= the Euclidean one, so a lower bound for the
    distance to any solid inside the box, and cheaper (no square root)."""
    d = [(p[k] - (low[k] + high[k]) / 2).abs() - (high[k] - low[k]) / 2 for k in range(3)]
    return torch.maximum(d[0], torch.maximum(d[1], d[2]))


def _in_box(p: Points, low: Vec3, high: Vec3, margin: float = 0.0) -> Tensor:
    inside = (p[0] >= low[0] - margin) & (p[0] <= high[0] + margin)
    inside &= (p[1] >= low[1] - margin) & (p[1] <= high[1] + margin)
    return inside & (p[2] >= low[2] - margin) & (p[2] <= high[2] + margin)


_FEATURE_MARGIN = 0.05  # > every fillet size k below, so fillets never reach past a feature's box


def _add_feature(head: Tensor, p: Points, box: tuple[Vec3, Vec3], combine) -> Tensor:
    """head updated by `combine(p_sub, head_sub)` only for points near the feature's box.

    Most grid points are far from any small feature; evaluating it only near its bounding box
    is what keeps the SDF cheap. Far points take min(head, a lower bound of the distance to the
    box), so the sign is right everywhere and |sdf| never overstates the distance to the union.
    """
    out = torch.minimum(head, _box_distance_bound(p, *box))
    index = _in_box(p, box[0], box[1], _FEATURE_MARGIN).nonzero().squeeze(1)
    if len(index):
        out[index] = combine(_take(p, index), head[index])
    return out


def _apply_near(p: Points, box: tuple[Vec3, Vec3], transform) -> Points:
    """p with `transform(p_sub)` applied to points inside `box` (where a deformation is nonzero)."""
    index = _in_box(p, *box).nonzero().squeeze(1)
    if len(index) == 0:
        return p
    return _put(p, index, transform(_take(p, index)))


# ----------------------------------------------------------------------------- deformations


def _smoothstep(x: Tensor, edge0: float, edge1: float) -> Tensor:
    t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _jaw_polar(p: Points) -> tuple[Tensor, Tensor]:
    """Radius and angle around the jaw axis; angle 0 = forward (+z), growing downward (opening)."""
    dy = p[1] - JAW_PIVOT_YZ[0]
    dz = p[2] - JAW_PIVOT_YZ[1]
    return torch.sqrt(dy * dy + dz * dz), torch.atan2(-dy, dz)


def _mouth_angle() -> float:
    return math.atan2(-(_MOUTH_YZ[0] - JAW_PIVOT_YZ[0]), _MOUTH_YZ[1] - JAW_PIVOT_YZ[1])


def _jaw_angle_map(angle: Tensor, x: Tensor, alpha: Tensor, inverse: bool) -> Tensor:
    """angle -> angle + alpha * weight(angle), or its exact inverse; alpha [N] per point.

    The jaw weight is piecewise linear in the angle around the pivot: 0 above the lips, rising to
    1 across the lip contact, 1 down to under the chin, falling to 0 toward the throat (the neck
    stays). The rise is sharp between the lips (so they part) and wide on the cheeks (so the skin
    stretches without a crease); its width depends on x only, which the rotation keeps. The map
    is monotone while alpha < the chin fade width, which JAW_MAX_ANGLE respects by a wide margin,
    so inverting it is a piecewise-linear interpolation with the knots swapped.
    """
    m = _mouth_angle()
    band = _LIP_BAND + (_CHEEK_BAND - _LIP_BAND) * _smoothstep(x.abs(), _MOUTH_HALF_WIDTH, 0.15)
    # Knot angles (canonical) and where they land (posed); weight 0, 1, 1, 0 at the four knots.
    rise0, rise1 = m - band / 2, m + band / 2
    fall0, fall1 = _CHIN_FADE
    canonical = (rise0, rise1, torch.full_like(x, fall0), torch.full_like(x, fall1))
    posed = (rise0, rise1 + alpha, fall0 + alpha, torch.full_like(x, fall1))
    source, target = (posed, canonical) if inverse else (canonical, posed)
    out = angle.clone()  # weight 0 outside [rise0, fall1]: unchanged
    for k in range(3):
        a0, a1, b0, b1 = source[k], source[k + 1], target[k], target[k + 1]
        inside = (angle >= a0) & (angle < a1)
        t = (angle - a0) / (a1 - a0).clamp_min(1e-9)
        out = torch.where(inside, b0 + t * (b1 - b0), out)
    return out


def _jaw_alpha(values: dict[str, float]) -> float:
    return JAW_MAX_ANGLE * max(-0.1, min(1.3, values["jaw_open"]))


def _jaw_map(p: Points, alpha: float, inverse: bool) -> Points:
    """Rotate about the jaw axis by alpha * weight; the exact inverse when `inverse`.

    A lateral weight (of x and the radius, both kept by the rotation) scales alpha per point,
    so cheeks beyond the jaw, the ears and points near the pivot stay put.
    """
    if alpha == 0.0:
        return p
    index = (p[0].abs() < _JAW_LATERAL_FADE[1]).nonzero().squeeze(1)
    if len(index) == 0:
        return p
    sub = _take(p, index)
    radius, angle = _jaw_polar(sub)
    lateral = (1.0 - _smoothstep(sub[0].abs(), *_JAW_LATERAL_FADE)) * _smoothstep(radius, 0.05, 0.14)
    new_angle = _jaw_angle_map(angle, sub[0], alpha * lateral, inverse)
    moved = (sub[0], JAW_PIVOT_YZ[0] - radius * torch.sin(new_angle), JAW_PIVOT_YZ[1] + radius * torch.cos(new_angle))
    return _put(p, index, moved)


# Displacement fields (canonical -> posed offsets) and the boxes outside which they are ~0 (3 sigma).
_BROW_BOX = ((-0.34, -0.01, -0.04), (0.34, 0.41, 0.44))
_LIP_BOX = ((-0.39, -0.36, -0.03), (0.39, 0.12, 0.51))


def _brow_displacement(p: Points, values: dict[str, float]) -> Points:
    """Brows and the forehead skin around them move up (raise) or down (frown)."""
    dx = (p[0].abs() - 0.10) / 0.08
    dy = (p[1] - 0.20) / 0.07
    dz = (p[2] - 0.20) / 0.08
    g = torch.exp(-(dx * dx + dy * dy + dz * dz))
    return torch.zeros_like(g), 0.035 * values["brow_raise"] * g, 0.004 * values["brow_raise"] * g


def _lip_displacement(p: Points, values: dict[str, float]) -> Points:
    """Rounding narrows and protrudes the lips, stretching widens, smiling lifts the corners."""
    round_, stretch, smile = values["lip_round"], values["lip_stretch"], values["smile"]
    x = p[0]
    gx, gy, gz = x / 0.13, (p[1] + 0.12) / 0.08, (p[2] - 0.24) / 0.09
    g = torch.exp(-(gx * gx + gy * gy + gz * gz))
    dx = x * (0.22 * stretch - 0.30 * round_ + 0.10 * smile) * g
    dy = 0.03 * smile * g * (x / 0.09) ** 2
    dz = (0.03 * round_ - 0.01 * smile) * g
    press, tuck = values["lip_press"], values["lip_tuck"]
    if press != 0.0 or tuck != 0.0:
        # 1 on the lower lip, 0 on the upper (a soft step at the contact line: |grad| stays < 1).
        below = torch.sigmoid((_MOUTH_YZ[0] - p[1]) / 0.02)
        lips = torch.exp(-(gx * gx + (gy / 0.6) ** 2 + gz * gz))
        # Pressing: both lips roll toward the contact line and flatten back a little.
        dy = dy + 0.020 * press * lips * (2.0 * below - 1.0)
        dz = dz - 0.016 * press * lips
        # Tucking: the lower lip rises to the upper teeth and is drawn back under them.
        dy = dy + 0.032 * tuck * lips * below
        dz = dz - 0.044 * tuck * lips * below
    return dx, dy, dz


def _displace(p: Points, field, box, values: dict[str, float], inverse: bool, iterations: int = 4) -> Points:
    """p + d(p), or with `inverse` the q solving q + d(q) = p by fixed-point iteration (it
    converges: |grad d| < 1 for these fields). Only points inside the field's box move."""

    def transform(x: Points) -> Points:
        if not inverse:
            d = field(x, values)
            return x[0] + d[0], x[1] + d[1], x[2] + d[2]
        q = x
        for _ in range(iterations):
            d = field(q, values)
            q = (x[0] - d[0], x[1] - d[1], x[2] - d[2])
        return q

    return _apply_near(p, box, transform)


def _brows_active(values: dict[str, float]) -> bool:
    return values["brow_raise"] != 0.0


def _lips_active(values: dict[str, float]) -> bool:
    return any(values[name] != 0.0 for name in ("lip_round", "lip_stretch", "smile", "lip_press", "lip_tuck"))


_MOUTH_BOX = ((-0.12, -0.34, 0.08), (0.12, 0.02, 0.42))  # holds the carve for any jaw angle


def _carve_mouth(distance: Tensor, q_jaw: Points, alpha: float, press: float = 0.0) -> Tensor:
    """Cut the opened mouth (a lens between the lips, a shallow pocket inside) out of the head.

    Works in jaw space (after undoing lip shaping, before undoing the jaw): there the lips have
    moved apart by the rotation and the gap is the angular wedge the rotation opened.
    """
    if alpha <= 1e-3:
        return distance
    index = _in_box(q_jaw, *_MOUTH_BOX).nonzero().squeeze(1)
    if len(index) == 0:
        return distance
    lip_radius = math.hypot(_MOUTH_YZ[0] - JAW_PIVOT_YZ[0], _MOUTH_YZ[1] - JAW_PIVOT_YZ[1])
    # Grow the half-height smoothly from 0 so a barely open mouth is a thin slit, not a jump;
    # pressed lips (p, b, m) close the gap whatever the jaw does.
    half_angle = (0.5 * alpha + 0.5 * _LIP_BAND * min(1.0, alpha / 0.05)) * (1.0 - max(0.0, min(1.0, 2.0 * press)))
    if half_angle <= 1e-4:
        return distance
    centre = _mouth_angle() + 0.5 * alpha
    sub = _take(q_jaw, index)
    radius, angle = _jaw_polar(sub)
    local = (sub[0], lip_radius * (angle - centre), radius - (lip_radius - 0.01))
    carve = _ellipsoid(local, (0.0, 0.0, 0.0), (_MOUTH_HALF_WIDTH, lip_radius * half_angle, 0.085))
    out = distance.clone()
    out[index] = _smooth_subtract(distance[index], carve, 0.006)
    return out


# ----------------------------------------------------------------------------- the head


class AnalyticHead:
    """Closed-form HeadModel: `sdf(points [N,3], identity [1344], expression [200]) -> [N]`."""

    identity_dim = IDENTITY_DIM
    expression_dim = EXPRESSION_DIM

    def sdf(self, points: Tensor, identity: Tensor, expression: Tensor) -> Tensor:
        """Posed points [N, 3] float32 -> signed distance [N] (negative inside)."""
        values = _expression_values(expression)
        q_jaw = self._undo_lips(_split(points), values)
        alpha = _jaw_alpha(values)
        q = self._undo_brows(_jaw_map(q_jaw, alpha, inverse=True), values)
        distance = self._canonical(q, identity, blink=values["blink"])
        return _carve_mouth(distance, q_jaw, alpha, values["lip_press"])

    def canonical_sdf(self, points: Tensor, identity: Tensor, blink: float = 0.0) -> Tensor:
        """SDF of the neutral, closed-mouth head in canonical space; points [N, 3] -> [N]."""
        return self._canonical(_split(points), identity, blink)

    def deform_points_backward(self, points: Tensor, expression: Tensor) -> Tensor:
        """Posed points [N, 3] -> canonical points [N, 3] (the NPHM direction)."""
        values = _expression_values(expression)
        q = self._undo_lips(_split(points), values)
        q = self._undo_brows(_jaw_map(q, _jaw_alpha(values), inverse=True), values)
        return torch.stack(q, dim=1)

    def deform_points_forward(self, points: Tensor, identity: Tensor, expression: Tensor) -> Tensor:
        """Canonical points [N, 3] -> posed points [N, 3]; inverse of `deform_points_backward`.

        Exact for the jaw, to fixed-point precision (~1e-5) for brows and lips. The deformation
        does not depend on identity; the argument keeps the call shape of the other methods.
        """
        values = _expression_values(expression)
        p = _split(points)
        if _brows_active(values):
            p = _displace(p, _brow_displacement, _BROW_BOX, values, inverse=False)
        p = _jaw_map(p, _jaw_alpha(values), inverse=False)
        if _lips_active(values):
            p = _displace(p, _lip_displacement, _LIP_BOX, values, inverse=False)
        return torch.stack(p, dim=1)

    @staticmethod
    def _undo_lips(p: Points, values: dict[str, float]) -> Points:
        return _displace(p, _lip_displacement, _LIP_BOX, values, inverse=True) if _lips_active(values) else p

    @staticmethod
    def _undo_brows(p: Points, values: dict[str, float]) -> Points:
        return _displace(p, _brow_displacement, _BROW_BOX, values, inverse=True) if _brows_active(values) else p

    @staticmethod
    def _canonical(q: Points, identity: Tensor, blink: float) -> Tensor:
        s = _squash(identity)
        w, h, d = s["head_width"], s["head_height"], s["head_depth"]
        cranium = _ellipsoid(q, (0.0, 0.20, -0.10), (0.29 * w, 0.36 * h, 0.34 * d))
        face = _ellipsoid(q, (0.0, 0.04, 0.0), (0.25 * w, 0.30, 0.22))
        head = _smooth_union(cranium, face, 0.05)
        jaw_w, chin = s["jaw_width"], s["chin_length"]
        jaw = _ellipsoid(q, (0.0, -0.16 - 0.03 * (chin - 1), 0.05), (0.19 * jaw_w, 0.13 * chin, 0.17))
        chin_ball = _sphere(q, (0.0, -0.235 - 0.10 * (chin - 1), 0.175), 0.055)
        head = _smooth_union(head, _smooth_union(jaw, chin_ball, 0.04), 0.05)
        muzzle = _ellipsoid(q, (0.0, -0.09, 0.12), (0.12, 0.11, 0.11))  # maxilla and teeth under the lips
        head = _smooth_union(head, muzzle, 0.05)
        # A neck down to the bottom of the grid box (rounded off inside it, so the surface stays closed).
        neck = _capsule(q, (0.0, -0.12, -0.08), (0.0, -0.36, -0.11), 0.12)
        head = _smooth_union(head, neck, 0.06)

        for side in (-1.0, 1.0):
            centre = (side * 0.285 * w, 0.08, -0.05)
            box = ((centre[0] - 0.03, 0.0, -0.10), (centre[0] + 0.03, 0.16, 0.0))
            ear = lambda p, hd, c=centre: _smooth_union(hd, _ellipsoid(p, c, (0.03, 0.08, 0.05)), 0.02)
            head = _add_feature(head, q, box, ear)

        nose_len, nose_w = s["nose_length"], s["nose_width"]
        tip = (0.0, -0.005, 0.22 + 0.10 * nose_len)

        def nose(p: Points, hd: Tensor) -> Tensor:
            shape = _capsule(p, (0.0, 0.14, 0.21), tip, 0.027 * nose_w)
            shape = _smooth_union(shape, _sphere(p, tip, 0.036 * nose_w), 0.02)
            for side in (-1.0, 1.0):
                wing = _sphere(p, (side * 0.036 * nose_w, -0.02, 0.24 + 0.02 * nose_len), 0.03 * nose_w)
                shape = _smooth_union(shape, wing, 0.015)
            return _smooth_union(hd, shape, 0.03)

        head = _add_feature(head, q, ((-0.08, -0.06, 0.17), (0.08, 0.17, tip[2] + 0.05)), nose)

        lips = s["lip_fullness"]

        def lip_pair(p: Points, hd: Tensor) -> Tensor:
            upper = _ellipsoid(p, (0.0, _MOUTH_YZ[0] + 0.021 * lips, 0.246), (0.085, 0.022 * lips, 0.03 * lips))
            lower = _ellipsoid(p, (0.0, _MOUTH_YZ[0] - 0.023 * lips, 0.240), (0.080, 0.024 * lips, 0.03 * lips))
            return _smooth_union(hd, _smooth_union(upper, lower, 0.006), 0.02)

        head = _add_feature(head, q, ((-0.09, -0.17, 0.20), (0.09, -0.05, 0.29)), lip_pair)

        spacing, brow = s["eye_spacing"], s["brow_prominence"]
        # Upper lid edge above the eye centre: covers the top of the eyeball when open, all of it shut.
        lid_line = 0.022 - 0.06 * max(-0.3, min(1.0, blink))

        def eyes_and_brows(p: Points, hd: Tensor) -> Tensor:
            for side in (-1.0, 1.0):
                c = (side * 0.10 * spacing, 0.125, 0.165)
                # An almond-shaped recess, the eyeball (with a cornea bulge) in it, and thick lids whose
                # rims are rounded: shapes broad enough for a 64^3 grid to keep.
                socket = _ellipsoid(p, (c[0], c[1] + 0.002, c[2] + 0.045), (0.064, 0.042, 0.05))
                hd = _smooth_subtract(hd, socket, 0.02)
                eyeball = _smooth_union(_sphere(p, c, 0.05), _sphere(p, (c[0], c[1], c[2] + 0.034), 0.026), 0.008)
                shell = _sphere(p, (c[0], c[1], c[2] + 0.001), 0.062)
                upper_lid = _smooth_intersect(shell, (c[1] + lid_line) - p[1], 0.01)
                lower_lid = _smooth_intersect(shell, p[1] - (c[1] - 0.034), 0.01)
                lids = torch.minimum(upper_lid, lower_lid)
                hd = _smooth_union(hd, _smooth_union(eyeball, lids, 0.012), 0.012)
                ridge_a, ridge_b = (side * 0.035 * spacing, 0.19, 0.215), (side * 0.165 * spacing, 0.205, 0.17)
                hd = _smooth_union(hd, _capsule(p, ridge_a, ridge_b, 0.018 * brow), 0.03)
                # The brow itself: a thin raised arch on the ridge.
                arch_a, arch_m, arch_b = (
                    (side * 0.045, 0.205, 0.222),
                    (side * 0.10, 0.222, 0.212),
                    (side * 0.16, 0.21, 0.18),
                )
                arch = torch.minimum(_capsule(p, arch_a, arch_m, 0.011), _capsule(p, arch_m, arch_b, 0.009))
                hd = _smooth_union(hd, arch, 0.006)
            return hd

        return _add_feature(head, q, ((-0.21, 0.06, 0.09), (0.21, 0.24, 0.24)), eyes_and_brows)
