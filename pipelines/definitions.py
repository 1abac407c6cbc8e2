"""The one Definitions object: assets, checks, jobs, sensors and resources, assembled here."""

from __future__ import annotations

from dagster import Definitions

from pipelines.assets.ingestion import per_sequence_assets
from pipelines.assets.segments import training_segments
from pipelines.jobs import build_segments_job, ingest_sequence_job
from pipelines.resources import default_resources
from pipelines.sensors import sequence_folder_sensor

all_assets = [*per_sequence_assets, training_segments]

defs = Definitions(
    assets=all_assets,
    jobs=[ingest_sequence_job, build_segments_job],
    sensors=[sequence_folder_sensor],
    resources=default_resources(),
)
