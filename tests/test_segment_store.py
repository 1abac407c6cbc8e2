"""The segment store's storage layer: frames written once, segments as slices, atomic versions."""

import os

import numpy as np
import pyarrow as pa
import pytest

from storage.frame_store import FRAMES_ZARR, FrameLayout, FrameStoreError, write_frame_store
from storage.segments import SegmentReader, SegmentStoreError, frames_dir, segments_root, write_manifest

LENGTHS = (70, 50)
WINDOW = 24


def _write_frames(store_root, n_vertices: int = 5) -> tuple[dict[str, np.ndarray], list[int]]:
    """Two sequences, the first with FLAME; returns the frames as written and the frame offsets."""
    rng = np.random.default_rng(0)
    data = {
        "expression": rng.standard_normal((sum(LENGTHS), 200)).astype(np.float32),
        "audio_features": rng.standard_normal((sum(LENGTHS), 8)).astype(np.float32),
        "flame_offsets": 0.01 * rng.standard_normal((LENGTHS[0], n_vertices, 3)).astype(np.float32),
    }
    layout = FrameLayout(sum(LENGTHS), 2, 200, 8, 1344, LENGTHS[0], 1, n_vertices)
    offsets = [0, LENGTHS[0]]
    with write_frame_store(frames_dir(store_root, "f-test"), layout, {"fps": 24}) as writer:
        for number, (offset, n) in enumerate(zip(offsets, LENGTHS, strict=True)):
            rows = slice(offset, offset + n)
            flame = data["flame_offsets"] if number == 0 else None
            template = np.ones((n_vertices, 3), np.float32) if number == 0 else None
            writer.append_sequence(
                f"ID{number}_S1", f"ID{number}", data["expression"][rows], data["audio_features"][rows],
                np.full(1344, number, np.float32), flame, template, np.zeros((2, 3), np.int32),
            )  # fmt: skip
    return data, offsets


def _manifest(offsets: list[int]) -> pa.Table:
    rows = []
    for number, (offset, n) in enumerate(zip(offsets, LENGTHS, strict=True)):
        for start in range(0, n - WINDOW + 1, 12):
            rows.append((f"ID{number}_S1", f"ID{number}", start, number, offset + start, number == 0))
    return pa.table(
        {
            "segment": np.arange(len(rows)),
            "sequence": [r[0] for r in rows],
            "identity": [r[1] for r in rows],
            "start_frame": [r[2] for r in rows],
            "n_frames": [WINDOW] * len(rows),
            "split": ["train" if r[3] == 0 else "val" for r in rows],
            "sequence_index": [r[3] for r in rows],
            "frame_offset": [r[4] for r in rows],
            "has_flame": [r[5] for r in rows],
            "flame_index": [0 if r[5] else -1 for r in rows],
            "flame_offset": [r[2] if r[5] else -1 for r in rows],
        }
    )


@pytest.mark.parametrize("cache_bytes", [0, 2**30])
def test_segments_are_slices_of_frames_stored_once(tmp_path, cache_bytes):
    data, offsets = _write_frames(tmp_path)
    manifest = _manifest(offsets)
    write_manifest(
        segments_root(tmp_path) / "v-test", manifest, {"frames": "f-test", "segment_frames": WINDOW, "fps": 24}
    )
    reader = SegmentReader(segments_root(tmp_path) / "v-test", cache_bytes=cache_bytes)
    assert reader.fields == ["audio_features", "expression", "flame_offsets", "identity"]
    order = np.random.default_rng(1).permutation(len(reader))
    starts = manifest.column("frame_offset").to_numpy()[order]
    expected = np.stack([data["expression"][s : s + WINDOW] for s in starts])
    np.testing.assert_array_equal(reader.read("expression", order), expected)
    np.testing.assert_array_equal(reader.read("audio_features", [3, 3, 0])[0], reader.read("audio_features", [3])[0])
    assert reader.read("identity", [len(reader) - 1])[0, 0] == 1
    flame = reader.indices(flame=True)
    assert list(reader.indices("train")) == list(flame)  # only the first sequence has FLAME
    got = reader.read("flame_offsets", flame[[1]])[0]
    np.testing.assert_allclose(
        got, data["flame_offsets"][12 : 12 + WINDOW], atol=reader.frames.summary["flame_max_abs_error"]
    )
    with pytest.raises(SegmentStoreError, match="has no FLAME"):
        reader.read("flame_offsets", reader.indices("val")[:1])
    with pytest.raises(IndexError):
        reader.read("expression", [len(reader)])
    assert reader.item_shape("flame_offsets") == (WINDOW, 5, 3) and reader.item_shape("identity") == (1344,)


def test_frame_store_failure_leaves_nothing(tmp_path):
    layout = FrameLayout(10, 1, 200, 8, 1344)
    target = frames_dir(tmp_path, "f-x")
    with pytest.raises(RuntimeError):
        with write_frame_store(target, layout, {}) as writer:
            writer.append_sequence("A_1", "A", np.zeros((4, 200)), np.zeros((4, 8)), np.zeros(1344))
            raise RuntimeError("killed")
    assert os.listdir(target.parent) == []
    write_manifest(
        segments_root(tmp_path) / "v-x", _manifest([0, 70]).slice(0, 1), {"frames": "f-x", "segment_frames": 4}
    )
    with pytest.raises(SegmentStoreError, match="f-x.*not complete frame data"):
        SegmentReader(segments_root(tmp_path) / "v-x")
    with pytest.raises(FrameStoreError, match="more rows than the 10 planned"):
        with write_frame_store(target, layout, {}) as writer:
            writer.append_sequence("A_1", "A", np.zeros((11, 200)), np.zeros((11, 8)), np.zeros(1344))


def test_damaged_chunk_is_reported_with_its_path(tmp_path):
    _, offsets = _write_frames(tmp_path)
    write_manifest(
        segments_root(tmp_path) / "v-test", _manifest(offsets), {"frames": "f-test", "segment_frames": WINDOW}
    )
    chunk = frames_dir(tmp_path, "f-test") / FRAMES_ZARR / "expression" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(SegmentStoreError, match="expression"):
        SegmentReader(segments_root(tmp_path) / "v-test").read("expression", [1])
