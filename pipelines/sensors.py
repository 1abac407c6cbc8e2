"""Keep the `sequences` partitions in step with the folders under the dataset root."""

import hashlib
import json
from pathlib import Path

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pipelines.ingest_batch import OP_NAME as BATCH_OP
from pipelines.jobs import ingest_new_sequences_job
from pipelines.lifecycle import missing_sequences
from pipelines.partitions import sequences_partitions
from pipelines.resources import DatasetResource, StoreResource

MAX_NEW_PER_TICK = 200  # bounded work per tick; a backlog drains over the next ticks
MAX_REMOVED_FRACTION = 0.5  # more of the known sequences gone at once looks like a broken mount, not a cleanup


@sensor(job=ingest_new_sequences_job, minimum_interval_seconds=30)
def sequence_folder_sensor(
    context: SensorEvaluationContext, dataset: DatasetResource, store: StoreResource
) -> SensorResult | SkipReason:
    """Register each new sequence folder as a partition and request ONE run of `ingest_new_sequences`
    for the tick's new folders (at most MAX_NEW_PER_TICK; it runs `ingest_sequence` for each through
    `facetalk ingest`'s pool, so the encoder loads once per lane, not once per sequence); deregister
    the partitions of folders that are gone and delete their stores, so segments stop reading them
    (as `facetalk ingest --prune` does).

    Deletion is guarded: when the root holds no sequence folder, or more than half of the known
    sequences vanished in one tick, nothing is removed and the tick says why (an unmounted or
    half-synced root must not wipe the store); `facetalk ingest --prune` removes them on purpose."""
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
    present = {s.key for s in scan.sequences}
    known = set(context.instance.get_dynamic_partitions(sequences_partitions.name))
    new_keys = [s.key for s in scan.sequences if s.key not in known]
    batch = new_keys[:MAX_NEW_PER_TICK]
    sequence_store = store.sequences()
    gone = missing_sequences(context.instance, sequence_store, present)
    if gone and (not present or len(gone) > MAX_REMOVED_FRACTION * len(known | set(gone))):
        context.log.warning(
            f"{len(gone)} known sequences have no folder under {root} (e.g. {', '.join(gone[:5])}); not removing "
            "that many at once: check the mount, or run `facetalk ingest --prune` to remove them"
        )
        gone = []
    for key in gone:
        sequence_store.remove(key)
    if gone:
        context.log.info(f"removed {len(gone)} sequences whose folder is gone: {', '.join(gone)}")
    next_cursor = json.dumps({"mtime": mtime, "backlog": len(new_keys) > len(batch)})
    requests = []
    if batch:
        requests.append(sequences_partitions.build_add_request(batch))
    if removed := [key for key in gone if key in known]:
        requests.append(sequences_partitions.build_delete_request(removed))
    if not requests:
        return SensorResult(cursor=next_cursor, skip_reason=SkipReason("no new or removed sequence folders"))
    if batch:
        context.log.info(f"{len(batch)} new sequences ({len(new_keys) - len(batch)} left for later ticks)")
    run_requests = [batch_run_request(root, batch)] if batch else []
    return SensorResult(run_requests=run_requests, dynamic_partitions_requests=requests, cursor=next_cursor)


def batch_run_request(root: Path, keys: list[str]) -> RunRequest:
    """One run of `ingest_new_sequences` for `keys`, the worker count left to the run (its cores)."""
    config = {"ops": {BATCH_OP: {"config": {"keys": list(keys)}}}}
    return RunRequest(run_key=_run_key(root, keys), run_config=config, tags={"facetalk/sequences": str(len(keys))})


def _run_key(root: Path, keys: list[str]) -> str:
    """Unique per batch of folder *creations*: the keys with their folders' mtimes, so a sequence
    removed and added back again gets a new run (Dagster drops a request whose run_key this sensor
    used before)."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(f"{key}:{(root / key).stat().st_mtime_ns}\n".encode())
    return f"ingest-batch:{len(keys)}:{digest.hexdigest()[:32]}"
