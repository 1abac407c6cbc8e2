from dagster import AssetSelection, define_asset_job

# Every per-sequence asset of one partition, in dependency order.
ingest_sequence_job = define_asset_job(
    "ingest_sequence",
    selection=AssetSelection.groups("ingestion"),
    description="Ingest one sequence folder: audio, features, NPHM and FLAME tracking, NPHM meshes.",
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
)
