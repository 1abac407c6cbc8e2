"""Keep the `sequences` partitions in step with the folders under the dataset root."""

import json

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pipelines.jobs import ingest_sequence_job
from pipelines.partitions import sequences_partitions
from pipelines.resources import DatasetResource

MAX_NEW_PER_TICK = 200  # bounded work per tick; a backlog drains over the next ticks


@sensor(job=ingest_sequence_job, minimum_interval_seconds=30)
def sequence_folder_sensor(context: SensorEvaluationContext, dataset: DatasetResource) -> SensorResult | SkipReason:
    """Register each new sequence folder as a partition and request one ingestion run for it."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    root = dataset.path
    if not root.is_dir():
        return SkipReason(f"dataset root {root} does not exist")
    mtime = root.stat().st_mtime_ns
    if cursor.get("mtime") == mtime and not cursor.get("backlog"):
        return SkipReason("dataset root unchanged since the last tick")

    scan = dataset.scan()
    for _name, reason in scan.rejected:
        context.log.warning(f"not a sequence: {reason}")
    known = set(context.instance.get_dynamic_partitions(sequences_partitions.name))
    new_keys = [s.key for s in scan.sequences if s.key not in known]
    batch = new_keys[:MAX_NEW_PER_TICK]
    next_cursor = json.dumps({"mtime": mtime, "backlog": len(new_keys) > len(batch)})
    if not batch:
        return SensorResult(cursor=next_cursor, skip_reason=SkipReason("no new sequence folders"))
    context.log.info(f"{len(batch)} new sequences ({len(new_keys) - len(batch)} left for later ticks)")
    return SensorResult(
        run_requests=[RunRequest(partition_key=key, run_key=f"ingest:{key}") for key in batch],
        dynamic_partitions_requests=[sequences_partitions.build_add_request(batch)],
        cursor=next_cursor,
    )
