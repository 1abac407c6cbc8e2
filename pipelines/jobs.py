from dagster import AssetSelection, define_asset_job, in_process_executor

from pipelines.ingest_batch import ingest_new_sequences_job
from pipelines.k8s_pods import gpu_tags

__all__ = ["build_segments_job", "ingest_new_sequences_job", "ingest_sequence_job", "retrain_job"]

# Every per-sequence asset of one partition, in dependency order, in ONE process: the multiprocess
# executor would start a process per step and reload (and re-hash) the audio encoder in each.
ingest_sequence_job = define_asset_job(
    "ingest_sequence",
    selection=AssetSelection.groups("ingestion"),
    description="Ingest one sequence folder: audio, features, NPHM and FLAME tracking, NPHM meshes.",
    executor_def=in_process_executor,
)

build_segments_job = define_asset_job(
    "build_training_segments",
    selection=AssetSelection.assets("training_segments"),
    description="Cut every ingested sequence into training windows.",
)

retrain_job = define_asset_job(
    "retrain",
    selection=AssetSelection.groups("training", "evaluation"),
    description="training_segments -> facetalk_model + flame_model -> evaluation.",
    tags=gpu_tags(),  # K8sRunLauncher: the run's pod (all of its steps) goes to a GPU node
)
