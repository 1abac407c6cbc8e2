"""Materialize assets through a Dagster instance from the command line, so the UI shows the runs."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, ExecuteInProcessResult, RunsFilter, materialize

from pipelines.assets.ingestion import per_sequence_assets
from pipelines.partitions import sequences_partitions
from storage.layout import scan_dataset, validate_sequence_key
from storage.location import is_remote, store_path

LAUNCHED_BY, CLI, PID_TAG = "facetalk/launched_by", "facetalk", "facetalk/pid"


@dataclass
class IngestSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)  # key -> "asset: message" lines
    rejected: list[tuple[str, str]] = field(default_factory=list)  # folder, why


def failure_messages(result: ExecuteInProcessResult) -> list[str]:
    """`asset: message` for each failed step: the first error below Dagster's own wrappers (ours).

    After retries the failure only says "Exceeded max_retries"; the reason is on the last retry event.
    """
    retried = {
        event.step_key: event.event_specific_data.error
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY and event.event_specific_data.error is not None
    }
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None and error.message.startswith("Exceeded max_retries") and event.step_key in retried:
            error = retried[event.step_key]
        while error is not None and error.cause is not None and _is_dagster_wrapper(error.cls_name or ""):
            error = error.cause
        text = (error.message if error is not None else "unknown error").strip()
        messages.append(f"{event.step_key}: {text.splitlines()[-1] if text else text}")
    return messages


def _is_dagster_wrapper(cls_name: str) -> bool:
    return cls_name.startswith(("Dagster", "RetryRequested"))


def require_writable_store(root) -> None:
    """Fail before any work when the store root cannot be written, instead of once per asset."""
    root = store_path(root)
    if is_remote(root):
        return  # object stores report permissions on the first write
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NotADirectoryError(f"store root {str(root)!r}: {str(existing)!r} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"store root {str(root)!r}: {str(existing)!r} is not writable")


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs a killed `facetalk` process left STARTED as failed, so the UI does not show them running."""
    orphaned = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={LAUNCHED_BY: CLI})):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, message=f"the facetalk process (pid {pid}) that ran it is gone")
            orphaned.append(run.run_id)
    return orphaned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cli_tags() -> dict[str, str]:
    return {LAUNCHED_BY: CLI, PID_TAG: str(os.getpid())}


def register_sequences(instance: DagsterInstance, keys: list[str]) -> list[str]:
    """Add the keys that are not partitions yet; return those added."""
    known = set(instance.get_dynamic_partitions(sequences_partitions.name))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(sequences_partitions.name, new)
    return new


def ingest_sequences(
    instance: DagsterInstance,
    resources: dict,
    data_root,
    only: list[str] | None = None,
    progress: Callable[[str], None] = print,
) -> IngestSummary:
    """Register every sequence folder as a partition and materialize its per-sequence assets, one run each."""
    scan = scan_dataset(data_root)
    require_writable_store(resources["store"].path)
    summary = IngestSummary(rejected=scan.rejected)
    for _name, reason in scan.rejected:
        progress(f"skipped folder: {reason}")
    keys = [s.key for s in scan.sequences]
    if only:
        for key in only:
            validate_sequence_key(key)
        missing = sorted(set(only) - set(keys))
        if missing:
            raise FileNotFoundError(f"no sequence folder for {', '.join(missing)} under {data_root}")
        keys = [key for key in keys if key in set(only)]
    added = register_sequences(instance, keys)
    progress(f"{len(keys)} sequences under {data_root} ({len(added)} newly registered)")
    for number, key in enumerate(keys, 1):
        result = materialize_assets(per_sequence_assets, instance, resources, partition_key=key)
        statuses = _statuses(result)
        if result.success:
            summary.succeeded.append(key)
            progress(f"[{number}/{len(keys)}] {key}: ok ({statuses})")
        else:
            summary.failed[key] = failure_messages(result)
            progress(f"[{number}/{len(keys)}] {key}: FAILED")
            for line in summary.failed[key]:
                progress(f"    {line}")
    progress(f"ingested {len(summary.succeeded)} of {len(keys)} sequences; {len(summary.failed)} failed")
    return summary


def _statuses(result: ExecuteInProcessResult) -> str:
    parts = []
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        status = materialization.metadata.get("status")
        parts.append(f"{materialization.asset_key.to_user_string()} {status.value if status else ''}".strip())
    return ", ".join(parts)


def materialize_segments(
    instance: DagsterInstance, resources: dict, run_config: dict | None = None
) -> ExecuteInProcessResult:
    from pipelines.assets.segments import training_segments

    return materialize_assets([training_segments], instance, resources, run_config)


def materialize_retrain(
    instance: DagsterInstance, resources: dict, run_config: dict | None = None
) -> ExecuteInProcessResult:
    """training_segments -> both models -> evaluation, in one run (what the `retrain` job selects)."""
    from pipelines.definitions import all_assets

    selected = [a for a in all_assets if a.key.to_user_string() in RETRAIN_ASSETS]
    return materialize_assets(selected, instance, resources, run_config)


RETRAIN_ASSETS = ("training_segments", "facetalk_model", "flame_model", "evaluation_metrics", "evaluation_renders")


def materialize_assets(
    assets: list,
    instance: DagsterInstance,
    resources: dict,
    run_config: dict | None = None,
    partition_key: str | None = None,
) -> ExecuteInProcessResult:
    """One run through the instance (so the UI lists it), tagged with this process for orphan cleanup.

    The console shows INFO and up (`FACETALK_LOG_LEVEL`); every event is still in the instance.
    """
    level = os.environ.get("FACETALK_LOG_LEVEL", "INFO")
    run_config = {"loggers": {"console": {"config": {"log_level": level}}}, **(run_config or {})}
    return materialize(
        assets,
        instance=instance,
        resources=resources,
        run_config=run_config,
        partition_key=partition_key,
        raise_on_error=False,
        tags=cli_tags(),
    )
