"""Scale benchmark: ingestion and segments at the real dataset's sizes, generated here.

Builds sequences in the published layout at FaceTalk's sizes (bench.realistic_data: 24 fps,
16 kHz audio, FLAME 5,023 vertices, NPHM meshes of ~157k vertices per frame) and a Wav2Vec2-base
sized encoder (random weights), then measures, each figure beside its baseline from the same run:

  per asset      time, peak RSS, raw bytes read vs bytes stored (one sequence, one process per asset)
  growth         peak RSS of ingesting a --frames vs a --long-frames sequence (whole sequence)
  workers        `facetalk ingest --workers 2` vs `--workers 1` (fresh stores, same data)
  no-op          `facetalk ingest` again over unchanged sequences vs their first ingest
  segments       `training_segments` over --segment-sequences stores: time, peak RSS, bytes on disk vs
                 the float32 frame data, and a no-op rebuild
  extrapolation  store, raw and segment bytes at 1,000 sequences

Peak RSS is the kernel's ru_maxrss of each child process tree (os.wait4). Generated data lives
under --workdir and is deleted at the end (--keep keeps it).

Run: python -m bench.scale [--sequences 4] [--frames 240] [--long-frames 1440]
                           [--mesh-vertices 157000] [--segment-sequences 200] [--workdir /var/tmp]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.realistic_data import FPS, folder_bytes, write_realistic_sequence

ROOT = Path(__file__).resolve().parents[1]
ASSET_ORDER = ("cleaned_audio", "nphm_expressions", "flame_vertices", "nphm_meshes", "audio_features")
COMPONENT_OF = {
    "cleaned_audio": "audio",
    "nphm_expressions": "nphm",
    "flame_vertices": "flame",
    "nphm_meshes": "nphm_meshes",
    "audio_features": "audio_features",
}
RAW_OF = {  # the part of a sequence folder each asset reads
    "cleaned_audio": "audio",
    "nphm_expressions": "nphm_tracking/nphm_expressions",
    "flame_vertices": "flame_2023_tracking",
    "nphm_meshes": "nphm_tracking/nphm_meshes",
    "audio_features": "audio",
}
GB = 1e9


# ---------------------------------------------------------------------------------- child processes


def child_rss_gb(argv: list[str], env: dict | None = None, with_cpu: bool = False) -> tuple:
    """Run argv; (wall seconds, peak RSS of its process tree in GB, stdout). Fails loudly.

    The child is reaped with os.wait4, whose rusage is that child's own (and its waited-for
    descendants'), unlike RUSAGE_CHILDREN, which is the maximum over every child so far."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        if process.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{err.read().decode()[-3000:]}")
        result = (seconds, usage.ru_maxrss * 1024 / GB, out.read().decode())  # ru_maxrss: KiB on Linux
        return (*result, usage.ru_utime + usage.ru_stime) if with_cpu else result


def step(asset: str, data: Path, store: Path, key: str, encoder: Path, mesh_mode: str) -> None:
    """One per-sequence asset for one sequence, at the ops level (what the asset body calls)."""
    from ops.tracking import ingest
    from storage.layout import sequence_folder
    from storage.sequence_store import SequenceStore

    seq, sequences = sequence_folder(data, key), SequenceStore(store)
    if asset == "cleaned_audio":
        outcome = ingest.ingest_cleaned_audio(seq, sequences)
    elif asset == "nphm_expressions":
        outcome = ingest.ingest_nphm_expressions(seq, sequences, fps=FPS)
    elif asset == "flame_vertices":
        outcome = ingest.ingest_flame_vertices(seq, sequences, fps=FPS)
    elif asset == "nphm_meshes":
        outcome = ingest.ingest_nphm_meshes(seq, sequences, mode=mesh_mode)
    elif asset == "audio_features":
        outcome = ingest.ingest_audio_features(
            seq, sequences, ingest.EncoderSource(encoder), ingest.FeatureSettings(fps=FPS)
        )
    elif asset == "all":
        for name in ASSET_ORDER:
            step(name, data, store, key, encoder, mesh_mode)
        return
    else:
        raise ValueError(f"unknown asset {asset!r}")
    print(json.dumps({"status": outcome.status, "metadata": outcome.metadata}, default=str))


def segments_step(store: Path) -> None:
    from ops.dataset.segmenting import SegmentingConfig, build_training_segments
    from storage.sequence_store import SequenceStore

    sequences = SequenceStore(store)
    keys = sequences.sequences_with("nphm", "audio_features")
    result = build_training_segments(sequences, keys, SegmentingConfig())
    print(json.dumps({"status": result.status, "path": str(result.path), "n_segments": result.n_segments}))


# ---------------------------------------------------------------------------------- measurements


def base_sized_encoder(path: Path) -> Path:
    from models.audio_encoder import create_random_encoder

    if not path.exists():  # Wav2Vec2-base shapes: 12 layers, 768 wide, 512 conv channels
        create_random_encoder(path, num_layers=12, intermediate_size=3072, conv_channels=512)
    return path


def per_asset(data: Path, store: Path, key: str, encoder: Path, mesh_mode: str) -> dict:
    rows = {}
    for asset in ASSET_ORDER:
        argv = [sys.executable, "-m", "bench.scale", "step", asset, str(data), str(store), key, str(encoder), mesh_mode]
        seconds, rss, _ = child_rss_gb(argv)
        component = store / "sequences" / f"{key}.zarr" / COMPONENT_OF[asset]
        rows[asset] = {
            "seconds": round(seconds, 2),
            "peak_rss_gb": round(rss, 3),
            "raw_mb": round(folder_bytes(data / key / RAW_OF[asset]) / 1e6, 1),
            "stored_mb": round(folder_bytes(component) / 1e6, 2) if component.exists() else 0.0,
        }
    return rows


def ingest_cli(data: Path, store: Path, workers: int, encoder: Path, home: Path) -> tuple[float, float, float]:
    """`facetalk ingest` in a child: (wall seconds, cores used = CPU seconds / wall seconds, peak RSS GB of
    its largest process)."""
    argv = [sys.executable, "-m", "pipelines.cli", "ingest", "--data-root", str(data), "--store", str(store)]
    argv += ["--workers", str(workers), "--encoder", str(encoder)]
    seconds, rss, _, cpu = child_rss_gb(argv, env={"DAGSTER_HOME": str(home)}, with_cpu=True)
    return seconds, cpu / seconds, rss


def synthetic_stores(store: Path, n_sequences: int, n_frames: int, flame_vertices: int) -> float:
    """Per-sequence components written directly (no meshes); returns the float32 frame-data bytes."""
    from storage.sequence_store import SequenceStore

    sequences, rng = SequenceStore(store), np.random.default_rng(0)
    template = rng.standard_normal((flame_vertices, 3)).astype(np.float32) * 0.1
    faces = rng.integers(0, flame_vertices, size=(2 * flame_vertices, 3)).astype(np.int32)
    frame_bytes = 0
    for number in range(n_sequences):
        key = f"ID{number // 10:03d}_S{number % 10:02d}"
        codes = np.cumsum(0.05 * rng.standard_normal((n_frames, 200)), axis=0).astype(np.float32)
        features = rng.standard_normal((n_frames, 768)).astype(np.float32)
        offsets = 0.002 * np.sin(np.arange(n_frames)[:, None, None] / 4.0 + template[None] * 40)
        attrs = {"fps": FPS, "n_frames": n_frames, "fingerprint": f"{key}-v1"}
        nphm = {"expression": codes, "identity": np.zeros(1344, np.float32)}
        sequences.write_component(key, "nphm", nphm, attrs)
        sequences.write_component(key, "audio_features", {"features": features}, attrs)
        flame = {"vertices": (template[None] + offsets).astype(np.float32), "template": template, "faces": faces}
        sequences.write_component(key, "flame", flame, attrs)
        frame_bytes += codes.nbytes + features.nbytes + offsets.astype(np.float32).nbytes
    return frame_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8, help="mesh-bearing sequences for the workers/no-op runs")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--long-frames", type=int, default=1440)
    parser.add_argument("--mesh-vertices", type=int, default=157_000)
    parser.add_argument("--segment-sequences", type=int, default=200)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "step":
        _, _, asset, data, store, key, encoder, mode = sys.argv
        step(asset, Path(data), Path(store), key, Path(encoder), mode)
        return 0
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "segments-step":
        segments_step(Path(sys.argv[2]))
        return 0
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="facetalk-scale-", dir=args.workdir))
    print(f"working in {work}", flush=True)
    try:
        figures = measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    return 0


def measure(args: argparse.Namespace, work: Path) -> dict:
    encoder = base_sized_encoder(work / "wav2vec2-base-random")
    data = work / "data"
    started = time.perf_counter()
    keys = [f"ID{n:02d}_S01" for n in range(args.sequences)]
    for number, key in enumerate(keys):
        write_realistic_sequence(data, key, args.frames, args.mesh_vertices, seed=number)
    raw_per_sequence = folder_bytes(data / keys[0])
    print(f"generated {len(keys)} sequences of {args.frames} frames in {time.perf_counter() - started:.0f} s "
          f"({raw_per_sequence / 1e6:.0f} MB each)", flush=True)  # fmt: skip

    figures: dict = {"sequence": {"frames": args.frames, "mesh_vertices": args.mesh_vertices}}
    for mode in ("reference", "copy"):
        store = work / f"store-{mode}"
        rows = per_asset(data, store, keys[0], encoder, mode)
        figures[f"per_asset_{mode}"] = rows
        stored = sum(row["stored_mb"] for row in rows.values())
        figures[f"store_mb_per_sequence_{mode}"] = round(stored, 1)
        meshes = rows["nphm_meshes"]
        print(f"\n{mode} mode, one sequence: asset, seconds, peak RSS GB, raw MB -> stored MB", flush=True)
        for asset, row in rows.items():
            print(
                f"  {asset:18s} {row['seconds']:7.2f} {row['peak_rss_gb']:6.2f} {row['raw_mb']:9.1f} -> {row['stored_mb']:8.2f}"
            )
        print(f"  meshes stored / raw: {meshes['stored_mb'] / max(meshes['raw_mb'], 1e-9):.4f}", flush=True)
        shutil.rmtree(store)
    figures["raw_mb_per_sequence"] = round(raw_per_sequence / 1e6, 1)

    growth = {}
    for frames in (args.frames, args.long_frames):
        key = f"GROW{frames}_S01"
        grow_data = work / "grow"
        write_realistic_sequence(grow_data, key, frames, args.mesh_vertices, seed=frames)
        argv = [sys.executable, "-m", "bench.scale", "step", "all", str(grow_data), str(work / "store-grow"), key]
        seconds, rss, _ = child_rss_gb([*argv, str(encoder), "reference"])
        growth[frames] = {"seconds": round(seconds, 1), "peak_rss_gb": round(rss, 3)}
        shutil.rmtree(grow_data / key)
        shutil.rmtree(work / "store-grow", ignore_errors=True)
    ratio = growth[args.long_frames]["peak_rss_gb"] / growth[args.frames]["peak_rss_gb"]
    figures["rss_growth"] = {**{str(k): v for k, v in growth.items()}, "ratio": round(ratio, 3)}
    print(f"\npeak RSS {args.frames} frames {growth[args.frames]['peak_rss_gb']:.2f} GB, "
          f"{args.long_frames} frames {growth[args.long_frames]['peak_rss_gb']:.2f} GB: x{ratio:.2f}", flush=True)  # fmt: skip

    one, one_cores, _ = ingest_cli(data, work / "store-w1", 1, encoder, work / "home-w1")
    two, two_cores, _ = ingest_cli(data, work / "store-w2", 2, encoder, work / "home-w2")
    again, _, _ = ingest_cli(data, work / "store-w2", 2, encoder, work / "home-w2")
    figures["workers"] = {
        "workers_1_s": round(one, 1),
        "workers_2_s": round(two, 1),
        "speedup": round(one / two, 2),
        # --workers 1 already keeps more than one core busy (the encoder runs on every core), which
        # bounds what a second worker can add: cores / cores_used_by_one.
        "cores_used_workers_1": round(one_cores, 2),
        "cores_used_workers_2": round(two_cores, 2),
    }
    figures["noop_reingest"] = {"first_s": round(two, 1), "again_s": round(again, 1), "ratio": round(again / two, 3)}
    print(f"\nfacetalk ingest, {len(keys)} sequences: --workers 1 {one:.1f} s ({one_cores:.2f} cores busy), "
          f"--workers 2 {two:.1f} s ({two_cores:.2f} cores): x{one / two:.2f}; again, unchanged: {again:.1f} s "
          f"({again / two:.1%} of the first)", flush=True)  # fmt: skip
    for name in ("store-w1", "store-w2"):
        shutil.rmtree(work / name)
    shutil.rmtree(data)

    segments_store = work / "store-segments"
    frame_bytes = synthetic_stores(segments_store, args.segment_sequences, args.frames, 5023)
    argv = [sys.executable, "-m", "bench.scale", "segments-step", str(segments_store)]
    seconds, rss, _ = child_rss_gb(argv)
    noop_seconds, _, out = child_rss_gb(argv)
    segment_bytes = folder_bytes(segments_store / "segments")
    figures["segments"] = {
        "sequences": args.segment_sequences,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(rss, 3),
        "bytes_gb": round(segment_bytes / GB, 3),
        "float32_frame_data_gb": round(frame_bytes / GB, 3),
        "bytes_vs_frame_data": round(segment_bytes / frame_bytes, 3),
        "noop_rebuild_s": round(noop_seconds, 2),
        "noop_status": json.loads(out.strip().splitlines()[-1])["status"],
    }
    print(f"\ntraining_segments, {args.segment_sequences} sequences: {seconds:.1f} s, peak RSS {rss:.2f} GB, "
          f"{segment_bytes / GB:.2f} GB on disk = {segment_bytes / frame_bytes:.2f}x the float32 frame data; "
          f"no-op rebuild {noop_seconds:.2f} s (process start included)", flush=True)  # fmt: skip

    scale = 1000
    figures["extrapolated_1000_sequences"] = {
        "raw_tb": round(raw_per_sequence * scale / 1e12, 2),
        "store_gb_reference": round(figures["store_mb_per_sequence_reference"] * scale / 1e3, 1),
        "store_gb_copy": round(figures["store_mb_per_sequence_copy"] * scale / 1e3, 1),
        "segments_gb_per_version": round(segment_bytes / args.segment_sequences * scale / GB, 1),
    }
    print(f"\nat 1,000 sequences: {figures['extrapolated_1000_sequences']}", flush=True)
    return figures


if __name__ == "__main__":
    sys.exit(main())
