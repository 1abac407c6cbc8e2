"""Checks on a written segment store: finite values, expected shapes, populated splits."""

from __future__ import annotations

import numpy as np

from ops.tracking.validation import CheckOutcome
from storage.location import StorePath
from storage.segments import SegmentReader

_BATCH = 256


def check_segment_store(path: StorePath, segment_frames: int, motion_dim: int = 200) -> list[CheckOutcome]:
    reader = SegmentReader(path)
    non_finite: dict[str, int] = {}
    for field in reader.fields:
        bad = 0
        for start in range(0, len(reader), _BATCH):
            block = reader.read(field, np.arange(start, min(start + _BATCH, len(reader))))
            bad += int(block.size - np.count_nonzero(np.isfinite(block)))
        non_finite[field] = bad
    expression = reader.group["expression"]
    features = reader.group["audio_features"]
    shape_ok = expression.shape[1:] == (segment_frames, motion_dim) and features.shape[1] == segment_frames
    counts = {split: len(reader.indices(split)) for split in ("train", "val", "test")}
    return [
        CheckOutcome(
            "segments_finite",
            not any(non_finite.values()),
            description="NaN/Inf values per field",
            metadata={"non_finite": non_finite},
        ),
        CheckOutcome(
            "segments_dimensions",
            shape_ok,
            description=f"expression {list(expression.shape)}, audio_features {list(features.shape)}; "
            f"expected [N, {segment_frames}, {motion_dim}] and [N, {segment_frames}, A]",
            metadata={"expression_shape": list(expression.shape), "audio_features_shape": list(features.shape)},
        ),
        CheckOutcome(
            "segments_splits",
            all(counts.values()),
            severity="WARN" if counts["train"] > 0 else "ERROR",  # training can go on without val/test
            description=f"segments per split: {counts}",
            metadata={"segments_per_split": counts},
        ),
    ]
