"""`training_segments`: fixed-length windows over every ingested sequence, split by identity."""

from dagster import AssetCheckResult, AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from ops.dataset.checks import check_segment_store
from ops.dataset.segmenting import DEFAULT_KEEP_VERSIONS, SegmentingConfig, build_training_segments
from pipelines.assets.ingestion import audio_features, flame_vertices, nphm_expressions
from pipelines.resources import StoreResource
from pipelines.results import check_specs, to_check_result

SEGMENT_CHECKS = ["segments_finite", "segments_dimensions", "segments_splits"]


_DEFAULTS = SegmentingConfig()  # one source of truth for the defaults, in ops/


class TrainingSegmentsConfig(Config):
    segment_frames: int = _DEFAULTS.segment_frames  # 48 = 2 s at the dataset's 24 frames/s
    stride: int = _DEFAULTS.stride
    val_fraction: float = _DEFAULTS.val_fraction  # of identities, not of segments
    test_fraction: float = _DEFAULTS.test_fraction
    split_seed: int = _DEFAULTS.split_seed
    include_flame: bool = _DEFAULTS.include_flame
    keep_versions: int = DEFAULT_KEEP_VERSIONS  # newest versions kept; those a published model used are kept too


@asset(
    group_name="training",
    deps=[nphm_expressions, audio_features, flame_vertices],
    code_version="segments-2",
    check_specs=check_specs("training_segments", SEGMENT_CHECKS),
    kinds={"zarr", "parquet"},
)
def training_segments(
    context: AssetExecutionContext, config: TrainingSegmentsConfig, store: StoreResource
) -> MaterializeResult:
    """Windows of `segment_frames` frames every `stride` over every ingested sequence: the frames stored
    once, a Parquet manifest per window setting. Sequences whose components disagree are left out."""
    sequences = store.sequences()
    keys = sequences.sequences_with("nphm", "audio_features")
    incomplete = sorted(set(sequences.sequences_with("audio")) - set(keys))
    if incomplete:
        context.log.warning(f"left out (not fully ingested): {', '.join(incomplete)}")
    settings = config.model_dump()
    keep = settings.pop("keep_versions")
    result = build_training_segments(
        sequences, keys, SegmentingConfig(**settings), progress=context.log.info, keep_versions=keep
    )
    for key, why in result.sequences_left_out.items():
        context.log.warning(f"sequence {key!r} left out of the segments: {why}")
    for key, why in result.flame_left_out.items():
        context.log.warning(f"sequence {key!r}: FLAME left out of the segments ({why}); its NPHM segments stay")
    checks: list[AssetCheckResult] = [
        to_check_result(c) for c in check_segment_store(result.path, config.segment_frames)
    ]
    ratio = result.stored_bytes / result.float32_bytes if result.float32_bytes else 0.0
    return MaterializeResult(
        metadata={
            "status": result.status,
            "store_path": MetadataValue.path(str(result.path)),
            "version": result.version,
            "frames": result.frames,
            "frames_status": result.frames_status,
            "n_segments": result.n_segments,
            "segments_per_split": MetadataValue.json(result.split_counts),
            "identities_per_split": MetadataValue.json(result.identities_by_split),
            "n_sequences": len(result.sequences_used),
            "sequences_too_short": MetadataValue.json(result.sequences_skipped),
            "sequences_left_out": MetadataValue.json(result.sequences_left_out),
            "flame_left_out": MetadataValue.json(result.flame_left_out),
            "sequences_not_ingested": MetadataValue.json(incomplete),
            "includes_flame": result.has_flame,
            "n_flame_sequences": len(result.flame_sequences),
            "n_flame_segments": result.n_flame_segments,
            "flame_max_abs_error": result.flame_max_abs_error,
            "stored_bytes": result.stored_bytes,
            "bytes_vs_float32_frames": round(ratio, 3),
            "pruned": MetadataValue.json(result.pruned),
            "segment_frames": config.segment_frames,
            "stride": config.stride,
            "fps": result.fps,
        },
        check_results=checks,
    )
