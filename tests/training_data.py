"""A small ingested store for the model assets' tests (test helper): 5 sequences, segments cut."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize

from pipelines.assets.segments import training_segments
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import ingest_sequences
from pipelines.training_launch import TrainingLauncher
from tests.builders import write_sequence


def ingest_for_training(tmp_path: Path, encoder: Path) -> tuple[DagsterInstance, dict, Path]:
    """The instance, the resources (training in a subprocess) and the data root."""
    data = tmp_path / "data"
    for identity in range(5):
        write_sequence(data, f"ID{identity}_SEN01", n_frames=96, seed=identity, nphm_meshes=False)
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(encoder)),
        "training_launcher": TrainingLauncher(),
    }
    instance = DagsterInstance.ephemeral()
    assert not ingest_sequences(instance, resources, data, progress=lambda line: None).failed
    segments = {"ops": {"training_segments": {"config": {"segment_frames": 24, "stride": 12}}}}
    assert materialize([training_segments], resources=resources, instance=instance, run_config=segments).success
    return instance, resources, data


def expected_device_type(accelerator: str = "auto") -> str:
    """The torch device type Lightning picks for `accelerator` on this machine."""
    import torch

    if accelerator in ("auto", "gpu", "cuda"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return accelerator


def step_log_messages(instance: DagsterInstance, run_id: str, step_key: str) -> list[str]:
    """The user-facing log messages of one step (what `context.log` and the Pipes child logged)."""
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if entry.step_key == step_key and entry.dagster_event is None
    ]


def materialization_metadata(result, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}
