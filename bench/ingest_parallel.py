"""Parallel ingestion at the real dataset's sizes: `--workers 1` vs `--workers 2` vs the daemon route.

Generates `--sequences` mesh-bearing sequences (bench.realistic_data: 240 frames, ~157k-vertex
NPHM meshes per frame, FLAME, 16 kHz audio) and a Wav2Vec2-base-sized encoder, then ingests the
same data three ways into fresh stores and instances, each timed from the start of the work to
the last sequence stored:

  workers_1   `facetalk ingest --workers 1`: one process (the baseline)
  workers_2   `facetalk ingest --workers 2`: this process plus one worker process
  daemon      the route a deployment uses: what `sequence_folder_sensor` requests for new folders,
              ONE queued run of `ingest_new_sequences` listing every key, started by the daemon
              as a fresh process (Dagster's default run launcher); it runs `ingest_sequence` per
              partition through the same pool as `facetalk ingest` (`--daemon-workers` lanes,
              default the cores). Timed from the submission to the batch run's end; `dagster dev`
              (webserver, daemon, code server) is started and loaded before the clock starts.

Only the first `--distinct-meshes` sequences get meshes of their own; the others hard-link them
(meshes are read by reference, so what an ingest reads is the same; see
`write_realistic_sequence(meshes_from=)`); audio, codes and FLAME differ in every sequence.
That keeps generation at ~2 minutes (a hard-linked sequence takes ~0.1 s) whatever `--sequences`.

Why 48 sequences by default (24 before): a worker process costs a few seconds to start (imports,
the encoder's load), which 24 sequences of ~3 s amortize poorly; the real dataset has ~1,000.
Fewer show the start-up more: pass `--sequences 24` to compare with earlier figures.

Run: python -m bench.ingest_parallel [--sequences 48] [--daemon-workers 0] [--skip-daemon] [--workdir /var/tmp]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.realistic_data import write_realistic_sequence
from bench.scale import ROOT, base_sized_encoder, ingest_cli

sys.path.insert(0, str(ROOT / "tests"))  # the `dagster dev` + GraphQL helpers the tests use


def daemon_route(data: Path, store: Path, encoder: Path, home: Path, keys: list[str], workers: int) -> dict:
    """One queued `ingest_new_sequences` run for all keys through `dagster dev`'s daemon; see the module docstring."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster_server import launch_job_run, running_dagster_dev, wait_for_run, wait_until_ready

    from pipelines.ingest_batch import BATCH_TAG, OP_NAME
    from pipelines.ingest_batch import JOB_NAME as BATCH_JOB
    from pipelines.settings import ensure_dagster_home

    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FACETALK_INSTANCE": "sqlite",
        "FACETALK_DATA_ROOT": str(data),
        "FACETALK_STORE": str(store),
        "FACETALK_AUDIO_ENCODER": str(encoder),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        ensure_dagster_home()
        instance = DagsterInstance.get()
        instance.add_dynamic_partitions("sequences", keys)
        with running_dagster_dev(ROOT / "workspace.yaml", env, home / "dagster_dev.log") as server:
            wait_until_ready(server, "facetalk", timeout=300)
            config = {"ops": {OP_NAME: {"config": {"keys": keys, "workers": workers}}}}
            started = time.perf_counter()
            batch_id = launch_job_run(server, BATCH_JOB, run_config=config)
            wait_for_run(server, batch_id, timeout=3600)
            seconds = time.perf_counter() - started
        (batch,) = instance.get_run_records(RunsFilter(run_ids=[batch_id]))
        records = instance.get_run_records(RunsFilter(job_name="ingest_sequence", tags={BATCH_TAG: batch_id}))
        assert len(records) == len(keys) and {r.dagster_run.status for r in records} == {DagsterRunStatus.SUCCESS}
        run_seconds = sorted(r.end_time - r.start_time for r in records)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "seconds": round(seconds, 1),
        "workers": workers or len(os.sched_getaffinity(0)),
        "queued_s": round(batch.start_time - batch.create_timestamp.timestamp(), 1),  # waiting for the daemon
        "median_run_s": round(run_seconds[len(run_seconds) // 2], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--distinct-meshes", type=int, default=4, help="sequences with mesh files of their own")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--mesh-vertices", type=int, default=157_000)
    parser.add_argument("--daemon-workers", type=int, default=0, help="the batch run's lanes (0: the cores)")
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="facetalk-ingest-parallel-", dir=args.workdir))
    print(f"working in {work}", flush=True)
    try:
        figures = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    return 0


def measure(args: argparse.Namespace, work: Path) -> dict:
    encoder = base_sized_encoder(work / "wav2vec2-base-random")
    data = work / "data"
    keys = [f"ID{n // 10:02d}_S{n % 10:02d}" for n in range(args.sequences)]
    started = time.perf_counter()
    for number, key in enumerate(keys):
        source = None if number < args.distinct_meshes else data / keys[number % args.distinct_meshes]
        write_realistic_sequence(data, key, args.frames, args.mesh_vertices, seed=number, meshes_from=source)
    print(f"generated {len(keys)} sequences of {args.frames} frames in {time.perf_counter() - started:.0f} s",
          flush=True)  # fmt: skip

    figures: dict = {"sequences": len(keys), "frames": args.frames, "mesh_vertices": args.mesh_vertices}
    for workers in (1, 2):
        home = work / f"home-w{workers}"
        seconds, cores, rss = ingest_cli(data, work / f"store-w{workers}", workers, encoder, home)
        figures[f"workers_{workers}"] = {
            "seconds": round(seconds, 1),
            "cores_busy": round(cores, 2),
            "peak_rss_gb": round(rss, 2),
        }
        print(f"--workers {workers}: {seconds:.1f} s ({cores:.2f} cores busy, peak RSS {rss:.2f} GB)", flush=True)
        shutil.rmtree(work / f"store-w{workers}")
    one = figures["workers_1"]["seconds"]
    figures["workers_speedup"] = round(one / figures["workers_2"]["seconds"], 2)
    if not args.skip_daemon:
        row = daemon_route(data, work / "store-daemon", encoder, work / "home-daemon", keys, args.daemon_workers)
        figures["daemon"] = row
        figures["daemon_vs_workers_1"] = round(row["seconds"] / one, 2)
        print(f"daemon route (one batch run, {row['workers']} lanes): {row['seconds']:.1f} s (queued "
              f"{row['queued_s']:.1f} s), median sequence run {row['median_run_s']:.1f} s", flush=True)  # fmt: skip

    print(f"\n{len(keys)} sequences: --workers 2 is x{figures['workers_speedup']:.2f} the speed of --workers 1"
          + (f"; the daemon route takes x{figures['daemon_vs_workers_1']:.2f} the time of --workers 1"
             if "daemon" in figures else ""), flush=True)  # fmt: skip
    return figures


if __name__ == "__main__":
    sys.exit(main())
