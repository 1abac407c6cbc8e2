"""Per-sequence assets: one partition per sequence folder, each cached by content hash.

A failure records its file and problem on the partition (`pipelines.partition_failure`). FLAME
tracking and NPHM meshes are optional: for a sequence without them, `flame_vertices` /
`nphm_meshes` materialize nothing, so the UI shows the partition missing, not filled.
"""

from collections.abc import Iterator

from dagster import AssetCheckResult, AssetExecutionContext, AssetKey, Config, MaterializeResult, asset

from ops.tracking import ingest as ingest
from pipelines.partition_failure import failure_reported
from pipelines.partitions import sequences_partitions
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.results import check_specs, ingest_result
from storage.layout import SequenceFolder

GROUP = "ingestion"
AUDIO_CHECKS = ["audio_finite"]
# components_consistent: NPHM vs FLAME vs audio frame counts. Not blocking: the sequence is stored,
# the other sequences proceed, and training_segments leaves an inconsistent one out.
FEATURE_CHECKS = ["features_finite", "audio_motion_length", "components_consistent"]
NPHM_CHECKS = ["expression_finite", "expression_dim"]
FLAME_CHECKS = ["vertices_finite", "vertex_dim"]
MESH_CHECKS = ["mesh_vertices_finite"]


def sequence_asset(name: str, component: str, checks: list[str], **kwargs):
    """A per-sequence asset: one partition per sequence folder, writing one store component."""
    kwargs.setdefault("kinds", {"zarr"})
    return asset(
        name=name,
        partitions_def=sequences_partitions,
        group_name=GROUP,
        code_version=ingest.CODE_VERSIONS[component],
        check_specs=check_specs(name, checks, partitions_def=sequences_partitions),
        **kwargs,
    )


class NphmMeshesConfig(Config):
    # "reference" (default): the store keeps an index of the dataset's mesh files (<1% of their
    # bytes) and renders read them from the data root. "copy": the meshes themselves, quantized
    # and compressed (~20% of their bytes), for a data root that goes away or an object store.
    mode: str = "reference"


class AudioFeaturesConfig(Config):
    max_drift_s: float = 1.0  # audio and motion lengths further apart than this are refused


@sequence_asset("cleaned_audio", "audio", AUDIO_CHECKS)
def cleaned_audio(context: AssetExecutionContext, dataset: DatasetResource, store: StoreResource) -> MaterializeResult:
    """Any audio file -> 16 kHz mono float32, DC removed, loudness-normalized; clipping and silence reported."""
    with failure_reported(context, dataset.path):
        outcome = ingest.ingest_cleaned_audio(dataset.sequence(context.partition_key), store.sequences())
    context.log.info(f"{context.partition_key}: cleaned_audio {outcome.status}")
    return ingest_result(outcome, AUDIO_CHECKS)


@sequence_asset("nphm_expressions", "nphm", NPHM_CHECKS)
def nphm_expressions(
    context: AssetExecutionContext, dataset: DatasetResource, store: StoreResource
) -> MaterializeResult:
    """Per-frame NPHM `.npz` codes -> expression [T, 200] (+ identity [1344], pose when present)."""
    with failure_reported(context, dataset.path):
        outcome = ingest.ingest_nphm_expressions(
            dataset.sequence(context.partition_key), store.sequences(), fps=dataset.fps
        )
    context.log.info(f"{context.partition_key}: nphm_expressions {outcome.status}")
    return ingest_result(outcome, NPHM_CHECKS)


def _unless_absent(
    context: AssetExecutionContext, outcome, checks: list[str]
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Materialize unless the optional input is absent: then only the checks report (not applicable;
    Dagster requires their results), and the partition stays missing."""
    context.log.info(f"{context.partition_key}: {context.asset_key.to_user_string()} {outcome.status}")
    if outcome.status != "absent":
        yield ingest_result(outcome, checks)
        return
    note = outcome.metadata.get("note", "input absent")
    for name in checks:
        yield AssetCheckResult(check_name=name, passed=True, description=f"not applicable: {note}")


@sequence_asset("flame_vertices", "flame", FLAME_CHECKS, output_required=False)
def flame_vertices(
    context: AssetExecutionContext, dataset: DatasetResource, store: StoreResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """FLAME template + per-frame PLY meshes -> vertices [T, V, 3], template and faces (optional)."""
    with failure_reported(context, dataset.path):
        seq = dataset.sequence(context.partition_key)
        outcome = ingest.ingest_flame_vertices(seq, store.sequences(), fps=dataset.fps)
    yield from _unless_absent(context, outcome, FLAME_CHECKS)


@sequence_asset("nphm_meshes", "nphm_meshes", MESH_CHECKS, output_required=False)
def nphm_meshes(
    context: AssetExecutionContext, config: NphmMeshesConfig, dataset: DatasetResource, store: StoreResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Per-frame NPHM meshes (topology varies) for ground-truth renders, optional: an index of the
    dataset's files by default, the meshes compactly with config `mode: copy`."""
    with failure_reported(context, dataset.path):
        outcome = ingest.ingest_nphm_meshes(dataset.sequence(context.partition_key), store.sequences(), config.mode)
    yield from _unless_absent(context, outcome, MESH_CHECKS)


@sequence_asset(
    "audio_features",
    "audio_features",
    FEATURE_CHECKS,
    deps=[cleaned_audio, nphm_expressions, flame_vertices],  # features align to the motion's frame count
    kinds={"zarr", "pytorch"},
)
def audio_features(
    context: AssetExecutionContext,
    config: AudioFeaturesConfig,
    dataset: DatasetResource,
    store: StoreResource,
    audio_encoder: AudioEncoderResource,
) -> MaterializeResult:
    """Frozen Wav2Vec2 features, CNN output interpolated to the motion frame count (FaceFormer): [T, 768]."""
    settings = ingest.FeatureSettings(fps=dataset.fps, max_drift_s=config.max_drift_s)
    with failure_reported(context, dataset.path):
        outcome = ingest.ingest_audio_features(
            dataset.sequence(context.partition_key), store.sequences(), audio_encoder.source(), settings
        )
    context.log.info(f"{context.partition_key}: audio_features {outcome.status}")
    return ingest_result(outcome, FEATURE_CHECKS)


per_sequence_assets = [cleaned_audio, nphm_expressions, flame_vertices, nphm_meshes, audio_features]
# The asset of each optional input (see `ops.tracking.ingest.optional_inputs_present`).
OPTIONAL_ASSETS = {"flame": flame_vertices, "nphm_meshes": nphm_meshes}


def assets_for(seq: SequenceFolder) -> list[AssetKey]:
    """The per-sequence assets a run for `seq` selects: all but those of absent optional inputs.

    Selecting rather than skipping inside the run matters: Dagster skips the steps downstream of a
    skipped output, and `audio_features` depends on `flame_vertices` (for the order of the steps)."""
    present = ingest.optional_inputs_present(seq)
    left_out = {OPTIONAL_ASSETS[component].key for component, here in present.items() if not here}
    return [a.key for a in per_sequence_assets if a.key not in left_out]
