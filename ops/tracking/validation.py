"""Data-quality checks shared by the ingestion steps, framework-free (assets turn them into asset checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    severity: str = "ERROR"  # "ERROR" | "WARN" when not passed
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def check_finite(name: str, values: np.ndarray, where: str) -> CheckOutcome:
    bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    return finite_outcome(name, bad, int(np.size(values)), where)


def finite_outcome(name: str, bad: int, total: int, where: str) -> CheckOutcome:
    """The finiteness check from counts, for data that was streamed rather than held."""
    return CheckOutcome(
        name,
        bad == 0,
        description=f"{where}: {bad} NaN/Inf values" if bad else f"{where}: all values finite",
        metadata={"non_finite_values": bad, "values": total},
    )


def check_dimension(name: str, found: int, expected: int) -> CheckOutcome:
    return CheckOutcome(
        name,
        found == expected,
        description=f"dimension {found}, expected {expected}",
        metadata={"found": found, "expected": expected},
    )


def check_length_drift(drift_s: float, fps: int, warn_frames: float) -> CheckOutcome:
    """Audio duration minus motion duration; the check warns beyond `warn_frames` frames."""
    drift_frames = drift_s * fps
    return CheckOutcome(
        "audio_motion_length",
        abs(drift_frames) <= warn_frames,
        severity="WARN",
        description=f"audio is {drift_s:+.3f} s ({drift_frames:+.2f} frames) longer than the motion",
        metadata={
            "drift_s": round(drift_s, 4),
            "drift_frames": round(drift_frames, 3),
            "tolerance_frames": warn_frames,
        },
    )


COMPONENTS_CONSISTENT = "components_consistent"


def check_components_consistent(
    motion: dict[str, int], audio_frames: float, fps: float, motion_tolerance: float, audio_tolerance: float
) -> CheckOutcome:
    """Frame counts of a sequence's components agree: the motion components (nphm, flame) within
    `motion_tolerance` frames of each other, the audio (its duration x fps) within `audio_tolerance`
    of each. A sequence that fails is still stored; training leaves it out."""
    motion_spread = max(motion.values()) - min(motion.values()) if motion else 0
    audio_apart = max((abs(audio_frames - n) for n in motion.values()), default=0.0)
    problems = []
    if motion_spread > motion_tolerance:
        problems.append(f"the motion differs by {motion_spread} frames (more than {motion_tolerance:g})")
    if audio_apart > audio_tolerance:
        problems.append(f"the audio is {audio_apart:.3g} frames off (more than {audio_tolerance:g})")
    counts = ", ".join([*(f"{name} {n}" for name, n in motion.items()), f"audio {audio_frames:.3g}"])
    return CheckOutcome(
        COMPONENTS_CONSISTENT,
        not problems,
        severity="ERROR",
        description=f"frames at {fps:g} fps: {counts}; " + ("; ".join(problems) if problems else "consistent"),
        metadata={
            **{f"{name}_frames": n for name, n in motion.items()},
            "audio_frames": round(float(audio_frames), 3),
            "motion_spread_frames": motion_spread,
            "audio_apart_frames": round(float(audio_apart), 3),
            "motion_tolerance_frames": motion_tolerance,
            "audio_tolerance_frames": audio_tolerance,
        },
    )
