"""The one Definitions object: assets, checks, jobs, sensors and resources, assembled here."""

from __future__ import annotations

from dagster import Definitions

from pipelines.assets.evaluation import evaluation_metrics, evaluation_renders
from pipelines.assets.ingestion import per_sequence_assets
from pipelines.assets.segments import training_segments
from pipelines.assets.training import facetalk_model, flame_model
from pipelines.jobs import build_segments_job, ingest_new_sequences_job, ingest_sequence_job, retrain_job
from pipelines.resources import default_resources
from pipelines.retraining import retrain_on_new_data, retrain_schedule
from pipelines.sensors import sequence_folder_sensor

all_assets = [
    *per_sequence_assets,
    training_segments,
    facetalk_model,
    flame_model,
    evaluation_metrics,
    evaluation_renders,
]

defs = Definitions(
    assets=all_assets,
    jobs=[ingest_sequence_job, ingest_new_sequences_job, build_segments_job, retrain_job],
    schedules=[retrain_schedule],
    sensors=[sequence_folder_sensor, retrain_on_new_data],
    resources=default_resources(),
)
