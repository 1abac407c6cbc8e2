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
    return CheckOutcome(
        name,
        bad == 0,
        description=f"{where}: {bad} NaN/Inf values" if bad else f"{where}: all values finite",
        metadata={"non_finite_values": bad, "values": int(np.size(values))},
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
