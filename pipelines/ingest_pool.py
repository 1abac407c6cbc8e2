"""Run the `ingest_sequence` job for many partitions at once, each worker loading the encoder once.

Why a pool of our own instead of Dagster's run queue: the queue launches a new process per run
(and the multiprocess executor one per step), so every run re-imports torch and reloads and
re-hashes the audio encoder, which costs more than ingesting a small sequence. Here each worker
process keeps one DagsterInstance, one set of resources (the encoder is cached per process in
`pipelines.resources`) and runs partition after partition in-process. Every run is still a real
run of the `ingest_sequence` job in the instance, so the UI lists it under the job's name.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from pipelines.ingest_report import Failure, SequenceOutcome, outcome_of

JOB_NAME = "ingest_sequence"

_worker: dict[str, Any] = {}  # this worker process's instance, resources, run config, data root


def ingest_partition(
    instance: DagsterInstance, resources: dict, key: str, run_config: dict, data_root: Path
) -> SequenceOutcome:
    """One run of the `ingest_sequence` job for partition `key`, in this process."""
    from pipelines.definitions import defs
    from pipelines.runner import cli_tags

    job = defs.resolve_job_def(JOB_NAME)
    try:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, partition_key=key, resources=resources,
            raise_on_error=False, tags=cli_tags(),
        )  # fmt: skip
    except Exception as error:  # a run that could not even start (config, instance): report, go on
        return SequenceOutcome(key, "failed", failures=[Failure(JOB_NAME, "", f"{type(error).__name__}: {error}")])
    return outcome_of(key, result, data_root)


def ingest_partitions(
    instance: DagsterInstance,
    resources: dict,
    keys: Iterable[str],
    run_config: dict,
    data_root: Path,
    workers: int,
    on_done: Callable[[SequenceOutcome], None],
) -> None:
    """Ingest `keys` with up to `workers` processes, calling `on_done` as each finishes.

    One worker, one key, or an in-memory instance (worker processes cannot share it): in this process.
    """
    keys = list(keys)
    workers = max(1, min(workers, len(keys)))
    if workers == 1 or not instance.is_persistent:
        for key in keys:
            on_done(ingest_partition(instance, resources, key, run_config, data_root))
        return
    specs = {name: (type(resource), _fields(resource)) for name, resource in resources.items()}
    threads = max(1, (os.cpu_count() or 1) // workers)  # workers x torch threads = cores, no oversubscription
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # dagster and grpc are not fork-safe
        initializer=_start_worker,
        initargs=(instance.get_ref(), specs, run_config, str(data_root), threads),
    )
    with pool:
        futures = {pool.submit(_ingest_in_worker, key): key for key in keys}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:  # the worker died (killed, out of memory): this key failed
                reason = f"worker process failed: {type(error).__name__}: {error}"
                outcome = SequenceOutcome(futures[future], "failed", failures=[Failure(JOB_NAME, "", reason)])
            on_done(outcome)


def _fields(resource: Any) -> dict[str, Any]:
    """A ConfigurableResource's field values: resources themselves do not pickle."""
    return {name: getattr(resource, name) for name in type(resource).model_fields}


def _start_worker(instance_ref: Any, specs: dict, run_config: dict, data_root: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _worker.update(
        instance=DagsterInstance.from_ref(instance_ref),
        resources={name: cls(**fields) for name, (cls, fields) in specs.items()},
        run_config=run_config,
        data_root=Path(data_root),
    )


def _ingest_in_worker(key: str) -> SequenceOutcome:
    w = _worker
    return ingest_partition(w["instance"], w["resources"], key, w["run_config"], w["data_root"])
