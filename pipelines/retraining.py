"""Retraining: a weekly schedule, and a sensor that retrains when the ingested data changed."""

import os

from dagster import (
    AssetKey,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from ops.dataset.segmenting import ingested_data_state
from pipelines.jobs import retrain_job
from pipelines.resources import StoreResource

RETRAIN_CRON = os.environ.get("FACETALK_RETRAIN_CRON", "0 3 * * 0")  # Sundays 03:00

retrain_schedule = ScheduleDefinition(
    name="weekly_retrain",
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    description="Rebuild training segments, retrain both models and evaluate them (FACETALK_RETRAIN_CRON).",
)

_ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


@sensor(job=retrain_job, minimum_interval_seconds=300)
def retrain_on_new_data(context: SensorEvaluationContext, store: StoreResource) -> RunRequest | SkipReason:
    """Request one retrain when the ingested sequences differ from those the current model saw."""
    sequences = store.sequences()
    keys = sequences.sequences_with("nphm", "audio_features")
    if not keys:
        return SkipReason("no ingested sequences yet")
    current = ingested_data_state(sequences, keys)
    event = context.instance.get_latest_materialization_event(AssetKey("facetalk_model"))
    trained_on = None
    if event is not None and event.asset_materialization is not None:
        value = event.asset_materialization.metadata.get("data_state")
        trained_on = getattr(value, "value", value)
    if trained_on == current:
        return SkipReason(f"the model was trained on the current data ({current})")
    active = context.instance.get_runs(RunsFilter(job_name=retrain_job.name, statuses=_ACTIVE), limit=1)
    if active:
        return SkipReason(f"a retrain run is already in progress ({active[0].run_id}); one at a time")
    # One request per data state: run_key dedupes ticks that see the same data.
    return RunRequest(run_key=f"retrain:{current}", tags={"facetalk/trigger": "new data"})
