"""Segment-store benchmark: build time, peak RSS, bytes vs float32 frames, no-op and stride-change cost.

    python -m bench.segments [--sequences 50] [--frames 240] [--vertices 5023] [--audio-dim 768]
                             [--noop-sequences 1000]

Sequences are written straight into a sequence store (random codes, features and FLAME offsets of
realistic shapes; a tenth without FLAME). `--noop-sequences` times the no-op rebuild over that many
small sequences (the decision reads attrs only, so frame sizes do not matter there). Peak RSS is
the process's (generation writes one sequence at a time). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from ops.dataset.segmenting import SegmentingConfig, build_training_segments
from storage.sequence_store import SequenceStore


def write_sequences(store: SequenceStore, n: int, frames: int, vertices: int, audio_dim: int) -> list[str]:
    rng = np.random.default_rng(0)
    keys = []
    for index in range(n):
        key = f"ID{index % 40:03d}_SEN{index:04d}"
        codes = rng.standard_normal((frames, 200)).astype(np.float32)
        store.write_component(
            key, "nphm", {"expression": codes, "identity": np.ones(1344, np.float32)}, {"fingerprint": key, "fps": 24}
        )
        features = {"features": rng.standard_normal((frames, audio_dim)).astype(np.float32)}
        store.write_component(key, "audio_features", features, {"fingerprint": key, "fps": 24})
        if vertices and index % 10 != 9:
            template = rng.uniform(-0.1, 0.1, (vertices, 3)).astype(np.float32)
            moved = template + 0.005 * rng.standard_normal((frames, vertices, 3)).astype(np.float32)
            arrays = {"vertices": moved, "template": template, "faces": np.zeros((9976, 3), np.int32)}
            store.write_component(key, "flame", arrays, {"fingerprint": key, "fps": 24})
        keys.append(key)
    return keys


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=50)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--vertices", type=int, default=5023)
    parser.add_argument("--audio-dim", type=int, default=768)
    parser.add_argument("--noop-sequences", type=int, default=1000)
    args = parser.parse_args()
    out: dict[str, float] = {}
    config = SegmentingConfig()
    with tempfile.TemporaryDirectory() as tmp:
        store = SequenceStore(Path(tmp) / "store")
        keys = write_sequences(store, args.sequences, args.frames, args.vertices, args.audio_dim)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        seconds, result = timed(lambda: build_training_segments(store, keys, config))
        out.update(
            sequences=args.sequences,
            segments=result.n_segments,
            build_s=round(seconds, 2),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
            peak_rss_before_build_mb=round(rss_before, 1),
            stored_bytes=result.stored_bytes,
            float32_frame_bytes=result.float32_bytes,
            bytes_vs_float32_frames=round(result.stored_bytes / result.float32_bytes, 3),
            flame_max_abs_error=result.flame_max_abs_error,
        )
        seconds, again = timed(lambda: build_training_segments(store, keys, SegmentingConfig(stride=24)))
        out.update(stride_change_s=round(seconds, 3), stride_change_frames=again.frames_status)
        print(f"{args.sequences} sequences: {json.dumps(out)}")
    with tempfile.TemporaryDirectory() as tmp:
        store = SequenceStore(Path(tmp) / "store")
        keys = write_sequences(store, args.noop_sequences, 60, 20, 16)
        build_training_segments(store, keys, config)
        seconds, noop = timed(lambda: build_training_segments(store, keys, config))
        out.update(noop_sequences=args.noop_sequences, noop_s=round(seconds, 3), noop_status=noop.status)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
