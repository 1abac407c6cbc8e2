"""Run the `ingest_sequence` job for many partitions at once, each worker loading the encoder once.

Why a pool of our own instead of Dagster's run queue: the queue launches a new process per run
(and the multiprocess executor one per step), so every run re-imports torch and reloads and
re-hashes the audio encoder, which costs more than ingesting a small sequence. Here this process
and N-1 worker processes each keep one DagsterInstance, one set of resources (the encoder is
cached per process in `pipelines.resources`) and run partition after partition in-process. Every run is still a real
run of the `ingest_sequence` job in the instance, so the UI lists it under the job's name.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from pipelines import sqlite_events
from pipelines.ingest_report import Failure, SequenceOutcome, outcome_of

JOB_NAME = "ingest_sequence"

_worker: dict[str, Any] = {}  # this worker process's instance, resources, run config, data root


def ingest_partition(
    instance: DagsterInstance,
    resources: dict,
    key: str,
    run_config: dict,
    data_root: Path,
    tags: dict[str, str] | None = None,
) -> SequenceOutcome:
    """One run of the `ingest_sequence` job for partition `key`, in this process, selecting the assets
    whose inputs the folder holds (`assets_for`); `tags` are added to the run's own (`cli_tags`)."""
    from pipelines.assets.ingestion import assets_for
    from pipelines.runner import cli_tags, job_with_resources
    from storage.layout import sequence_folder

    try:
        selected = assets_for(sequence_folder(data_root, key))
        result = job_with_resources(JOB_NAME, resources).execute_in_process(
            run_config=_for_selection(run_config, selected), instance=instance, partition_key=key,
            raise_on_error=False, tags={**cli_tags(), **(tags or {})}, asset_selection=selected,
        )  # fmt: skip
    except Exception as error:  # a run that could not even start (config, instance): report, go on
        return SequenceOutcome(key, "failed", failures=[Failure(JOB_NAME, "", f"{type(error).__name__}: {error}")])
    return outcome_of(key, result, data_root)


def _for_selection(run_config: dict, selected: list) -> dict:
    """The run config without the `ops` entries of assets left out (Dagster refuses config for them)."""
    names = {key.to_user_string() for key in selected}
    ops = {name: value for name, value in run_config.get("ops", {}).items() if name in names}
    return {**run_config, "ops": ops} if "ops" in run_config else run_config


def ingest_partitions(
    instance: DagsterInstance,
    resources: dict,
    keys: Iterable[str],
    run_config: dict,
    data_root: Path,
    workers: int,
    on_done: Callable[[SequenceOutcome], None],
    tags: dict[str, str] | None = None,
) -> None:
    """Ingest `keys` in up to `workers` lanes, calling `on_done` (serialized) as each finishes.

    Lane 0 is this process (already warm: imports done, encoder cached after its first run); each
    other lane is a thread feeding one worker process of its own. Lanes pull keys from one queue,
    so a lane stuck on a long sequence does not hold back others. An in-memory instance cannot be
    shared with other processes: then everything runs here.
    """
    sqlite_events.install()
    pending: queue.SimpleQueue[str] = queue.SimpleQueue()
    for key in keys:
        pending.put(key)
    lanes = max(1, min(workers, pending.qsize()))
    if lanes > 1 and not instance.is_persistent:
        lanes = 1
    report_lock = threading.Lock()

    def report(outcome: SequenceOutcome) -> None:
        with report_lock:
            on_done(outcome)

    def drain(run: Callable[[str], SequenceOutcome]) -> None:
        while True:
            try:
                key = pending.get_nowait()
            except queue.Empty:
                return
            report(run(key))

    threads = max(1, (os.cpu_count() or 1) // lanes)  # lanes x torch threads = cores, no oversubscription
    specs = {name: (type(resource), _fields(resource)) for name, resource in resources.items()}
    pools = [
        ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),  # dagster and grpc are not fork-safe
            initializer=_start_worker,
            initargs=(instance.get_ref(), specs, run_config, str(data_root), threads, tags),
        )
        for _ in range(lanes - 1)
    ]
    feeders = [threading.Thread(target=drain, args=(functools.partial(_run_in, pool),), daemon=True) for pool in pools]
    with _torch_threads(threads if lanes > 1 else None):
        for pool in pools:
            pool.submit(_warm_up)  # imports and the encoder load overlap with this lane's first runs
        for feeder in feeders:
            feeder.start()
        try:
            drain(lambda key: ingest_partition(instance, resources, key, run_config, data_root, tags))
            for feeder in feeders:
                feeder.join()
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)


def _run_in(pool: ProcessPoolExecutor, key: str) -> SequenceOutcome:
    try:
        return pool.submit(_ingest_in_worker, key).result()
    except Exception as error:  # the worker died (killed, out of memory): this key failed
        reason = f"worker process failed: {type(error).__name__}: {error}"
        return SequenceOutcome(key, "failed", failures=[Failure(JOB_NAME, "", reason)])


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fields(resource: Any) -> dict[str, Any]:
    """A ConfigurableResource's field values: resources themselves do not pickle."""
    return {name: getattr(resource, name) for name in type(resource).model_fields}


def _start_worker(
    instance_ref: Any, specs: dict, run_config: dict, data_root: str, threads: int, tags: dict | None
) -> None:
    import torch

    sqlite_events.install()
    torch.set_num_threads(threads)
    _worker.update(
        instance=DagsterInstance.from_ref(instance_ref),
        resources={name: cls(**fields) for name, (cls, fields) in specs.items()},
        run_config=run_config,
        data_root=Path(data_root),
        tags=tags,
    )


def _warm_up() -> None:
    """Import what a run imports and load the encoder, before the first key arrives."""
    import pipelines.definitions  # noqa: F401
    from ops.audio import cleaning, features  # noqa: F401

    source = _worker["resources"]["audio_encoder"].source()
    _ = source.encoder, source.fingerprint


def _ingest_in_worker(key: str) -> SequenceOutcome:
    w = _worker
    return ingest_partition(w["instance"], w["resources"], key, w["run_config"], w["data_root"], w["tags"])
