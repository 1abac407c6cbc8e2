"""Checks on a written segment store, from the stats recorded while writing plus a small sample.

Nothing here reads the whole store: non-finite counts were taken as the frames were written
(`frames.json`), shapes come from metadata, and up to `SAMPLE` segments are read back to prove
the store opens and slices as the manifest says.
"""

from __future__ import annotations

import numpy as np

from ops.tracking.validation import CheckOutcome
from storage.location import StorePath
from storage.segments import SegmentReader

SAMPLE = 32  # segments read back per check run


def check_segment_store(path: StorePath, segment_frames: int, motion_dim: int = 200) -> list[CheckOutcome]:
    reader = SegmentReader(path, cache_bytes=0)
    non_finite = {name: int(n) for name, n in reader.frames.summary.get("non_finite", {}).items()}
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(reader), size=min(SAMPLE, len(reader)), replace=False))
    sampled_bad = {}
    for field in reader.fields:
        rows = reader.indices(flame=True)[: len(sample)] if field == "flame_offsets" else sample
        block = reader.read(field, rows)
        sampled_bad[field] = int(block.size - np.count_nonzero(np.isfinite(block)))
    expression = (len(reader), *reader.item_shape("expression"))
    features = (len(reader), *reader.item_shape("audio_features"))
    shape_ok = expression[1:] == (segment_frames, motion_dim) and features[1] == segment_frames
    counts = {split: len(reader.indices(split)) for split in ("train", "val", "test")}
    return [
        CheckOutcome(
            "segments_finite",
            not any(non_finite.values()) and not any(sampled_bad.values()),
            description=f"NaN/Inf values per field, counted while writing; {len(sample)} segments read back",
            metadata={"non_finite": non_finite, "non_finite_in_sample": sampled_bad},
        ),
        CheckOutcome(
            "segments_dimensions",
            shape_ok,
            description=f"expression {list(expression)}, audio_features {list(features)}; "
            f"expected [N, {segment_frames}, {motion_dim}] and [N, {segment_frames}, A]",
            metadata={"expression_shape": list(expression), "audio_features_shape": list(features)},
        ),
        CheckOutcome(
            "segments_splits",
            all(counts.values()),
            severity="WARN" if counts["train"] > 0 else "ERROR",  # training can go on without val/test
            description=f"segments per split: {counts}",
            metadata={"segments_per_split": counts},
        ),
    ]
