"""Ingest every partition through Dagster, one run per partition as `facetalk ingest` does (test helper)."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize

from pipelines.assets.ingestion import per_sequence_assets
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import failure_messages
from pipelines.training_launch import TrainingLauncher


def ingest_every_partition(
    dataset: Path, store_root: str, encoder: Path, keys: list[str]
) -> tuple[dict, DagsterInstance]:
    """The resources used and the ephemeral instance the runs went through; fails on any failed run."""
    resources = {
        "dataset": DatasetResource(root=str(dataset)),
        "store": StoreResource(root=store_root),
        "audio_encoder": AudioEncoderResource(path=str(encoder)),
        "training_launcher": TrainingLauncher(),  # the model assets train through it
    }
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sequences", keys)
    for key in keys:
        result = materialize(
            per_sequence_assets, partition_key=key, resources=resources, instance=instance, raise_on_error=False
        )
        assert result.success, failure_messages(result)
    return resources, instance
