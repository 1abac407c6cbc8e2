"""A per-sequence asset that fails says why where the UI shows its partition: the file and the problem.

Dagster OSS stores no "failed to materialize" event, so a failed partition's page only links the
run's logs. Before the failure propagates, the asset logs an observation for its partition with
`file` and `problem` (the partition page lists it among the partition's events, and shows it under
Metadata once the partition has a materialization), then raises `dagster.Failure` carrying the same
metadata, so the step, the run and the CLI still fail as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import AssetExecutionContext, AssetObservation, Failure, MetadataValue

from pipelines.ingest_report import file_named


def problem_of(error: BaseException) -> str:
    """The error's message, its last non-empty line (ours name the file there)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


@contextmanager
def failure_reported(context: AssetExecutionContext, data_root: Path) -> Iterator[None]:
    """Run the block; on an error, record `file` and `problem` on the asset's partition, then fail."""
    try:
        yield
    except Failure:
        raise
    except Exception as error:
        problem = problem_of(error)
        file = file_named(problem, data_root)
        metadata = {"status": "failed", "file": file or "-", "problem": problem, "run_id": context.run.run_id}
        context.log_event(
            AssetObservation(
                asset_key=context.asset_key,
                partition=context.partition_key,
                description=f"failed: {problem}",
                metadata=metadata,
            )
        )
        raise Failure(
            description=str(error),
            metadata={"file": MetadataValue.path(file) if file else "-", "problem": problem},
        ) from error
