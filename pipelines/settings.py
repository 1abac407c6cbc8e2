"""Where things live, from the environment, with defaults that serve the demo."""

from __future__ import annotations

import os
from pathlib import Path

from storage.location import StorePath, require_local, store_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def facetalk_home() -> Path:
    """`FACETALK_HOME`, else `var/` in a source checkout, else `~/.facetalk`."""
    if home := os.environ.get("FACETALK_HOME"):
        return Path(home).expanduser()
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / "var"
    return Path.home() / ".facetalk"


def default_data_root() -> Path:
    return facetalk_home() / "demo_data"


def default_encoder_path() -> Path:
    return facetalk_home() / "models" / "wav2vec2-demo"


def data_root() -> Path:
    """The dataset root in the published FaceTalk layout (`FACETALK_DATA_ROOT`)."""
    return require_local(os.environ.get("FACETALK_DATA_ROOT") or default_data_root(), "FACETALK_DATA_ROOT")


def store_root() -> StorePath:
    """Where the Zarr stores, checkpoints, metrics and renders go (`FACETALK_STORE`: a path or s3:// URL)."""
    return store_path(os.environ.get("FACETALK_STORE") or facetalk_home() / "store")


def audio_encoder_path() -> Path:
    """Wav2Vec2 weights: a local directory saved with `save_pretrained` (`FACETALK_AUDIO_ENCODER`)."""
    return Path(os.environ.get("FACETALK_AUDIO_ENCODER", default_encoder_path())).expanduser()


def dataset_fps() -> int | None:
    """`FACETALK_FPS` for a deployment whose dataset is not at the default frame rate (DatasetResource.fps)."""
    value = os.environ.get("FACETALK_FPS")
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"FACETALK_FPS must be a positive whole number of frames per second, got {value!r}")
    return int(value)


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", facetalk_home() / "dagster_home")).expanduser()


def ensure_dagster_home() -> Path:
    """Point DAGSTER_HOME at a persistent instance whose `dagster.yaml` follows the settings.

    The yaml comes from `pipelines.instance_config` (FACETALK_INSTANCE: sqlite or postgres). A file
    facetalk wrote is rewritten when the settings change; a file without its marker line is the
    user's and stays as it is."""
    from pipelines.instance_config import instance_yaml, is_ours

    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = instance_yaml()  # raises on unusable settings, before anything starts
    current = config.read_text() if config.exists() else None
    if current is None or (is_ours(current) and current != wanted):
        config.write_text(wanted)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


ENCODER_ENV = "FACETALK_AUDIO_ENCODER"


def random_encoder_refusal(data_root: Path, encoder_flag: str | None) -> str | None:
    """Why ingesting `data_root` with the random demo encoder is refused, or None when it is fine.

    Real speech encoded by the demo encoder (random weights, or weights trained on espeak-ng's
    synthetic voices only) gives features that are then cached and trained on as if they were
    Wav2Vec2's; only the demo dataset (it carries a marker) may use it without being asked."""
    from storage.layout import is_demo_dataset

    if encoder_flag or os.environ.get(ENCODER_ENV) or is_demo_dataset(data_root):
        return None
    return (
        f"{data_root} is not the demo dataset, and no audio encoder is set: its speech would be encoded by "
        f"the demo encoder ({default_encoder_path()}: random weights, or trained on synthetic voices only). Point at real Wav2Vec2 weights with --encoder PATH or "
        f"{ENCODER_ENV}=PATH (README, 'Real Wav2Vec2 weights'), or pass --allow-random-encoder to go on anyway."
    )
