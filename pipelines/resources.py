"""Resources: where the dataset, the stores and the audio-encoder weights are."""

from pathlib import Path

from dagster import ConfigurableResource

from ops.tracking.ingest import EncoderSource
from pipelines import settings
from pipelines.training_launch import training_launcher_from_env
from storage.layout import DatasetScan, SequenceFolder, scan_dataset, sequence_folder
from storage.location import StorePath, require_local, store_path
from storage.sequence_store import SequenceStore


class DatasetResource(ConfigurableResource):
    """A dataset root in the published FaceTalk layout.

    `fps`: the frame rate of its tracking (24 in the FaceTalk release). It is read here once,
    written into each sequence store's attrs at ingest, and read back from the data downstream
    (segments, training, generation)."""

    root: str
    fps: int = 24

    @property
    def path(self) -> Path:
        # Tracking files are read by local libraries (PLY readers, soundfile); mount the data instead.
        return require_local(self.root, "the dataset root (FACETALK_DATA_ROOT, DatasetResource.root)")

    def scan(self) -> DatasetScan:
        return scan_dataset(self.path)

    def sequence(self, key: str) -> SequenceFolder:
        return sequence_folder(self.path, key)


class StoreResource(ConfigurableResource):
    """The store root: per-sequence Zarr groups, segment stores, checkpoints, renders, metrics.

    A local path, or an fsspec URL such as `s3://bucket/prefix` (options from the environment,
    see `storage.location`)."""

    root: str

    @property
    def path(self) -> StorePath:
        return store_path(self.root)

    def sequences(self) -> SequenceStore:
        return SequenceStore(self.path)


_ENCODERS: dict[tuple[str, str], EncoderSource] = {}


class AudioEncoderResource(ConfigurableResource):
    """Frozen Wav2Vec2 weights in a local directory (never fetched from a hub).

    With `create_demo_if_missing`, an absent directory is filled with a small, seeded,
    randomly initialised encoder so the demo runs without real weights; the feature
    metadata then says `encoder_random_init: true`.
    """

    path: str
    create_demo_if_missing: bool = False
    device: str = "cpu"

    def source(self) -> EncoderSource:
        path = Path(self.path).expanduser()
        if self.create_demo_if_missing and not path.exists():
            from models.audio_encoder import create_random_encoder

            create_random_encoder(path)
        key = (str(path), self.device)
        if key not in _ENCODERS:  # load the weights once per process, not once per partition
            _ENCODERS[key] = EncoderSource(path, self.device)
        return _ENCODERS[key]


def default_resources(
    data_root: str | Path | None = None,
    store: str | Path | None = None,
    audio_encoder: str | Path | None = None,
    fps: int | None = None,
) -> dict:
    """The resources for these roots; what is not given comes from the deployment's environment
    (FACETALK_DATA_ROOT, FACETALK_STORE, FACETALK_AUDIO_ENCODER, FACETALK_FPS, FACETALK_TRAINING_*) or the
    demo defaults."""
    encoder = Path(audio_encoder).expanduser() if audio_encoder else settings.audio_encoder_path()
    fps = fps or settings.dataset_fps()
    return {
        "dataset": DatasetResource(
            root=str(require_local(data_root, "the dataset root") if data_root else settings.data_root()),
            **({"fps": fps} if fps else {}),
        ),
        # Taken as written when it is a URL: Path() would fold `s3://` into `s3:/`.
        "store": StoreResource(root=str(store_path(store) if store else settings.store_root())),
        "audio_encoder": AudioEncoderResource(
            path=str(encoder), create_demo_if_missing=encoder == settings.default_encoder_path()
        ),
        # Where the model assets train: a subprocess, or a Kubernetes pod (pipelines/training_launch.py).
        "training_launcher": training_launcher_from_env(),
    }
