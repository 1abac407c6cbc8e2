"""A corpus of crafted bad inputs through the real Dagster ingestion path (`ingest_sequences`).

One dataset holds every case, ingested once (module fixture). Each damaged sequence carries up to
one damage per independent asset (audio, NPHM codes, FLAME meshes, NPHM meshes), so one run
exercises several cases; every case is then asserted on its own:

(a) the failing asset's message names the damaged file (or folder) and says what is wrong;
(b) the good sequences of the same dataset still materialize every component;
(c) no component directory appears for the failed asset, and no hidden temporaries are left;
(d) a sequence ingested before and damaged afterwards keeps its stored components byte for byte.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import IngestSummary, ingest_sequences
from storage.safe_pickle import UnsafePickleError, load_numpy_pickle
from storage.sequence_store import COMPONENTS, SequenceStore
from tests import bad_inputs as bad
from tests.builders import write_sequence

N_FRAMES = 24  # 1 s at 24 fps: enough for every reader, cheap to encode

# The asset that writes each store component.
COMPONENT_OF = {
    "cleaned_audio": "audio",
    "nphm_expressions": "nphm",
    "flame_vertices": "flame",
    "nphm_meshes": "nphm_meshes",
    "audio_features": "audio_features",
}
FEEDS_AUDIO_FEATURES = {"cleaned_audio", "nphm_expressions", "flame_vertices"}

GOOD = ["Good01_SEN01", "Good02_SEN01"]
ASCII_FLAME = "Okay01_SEN01"  # valid but unusual files: must ingest, equal to GOOD[0] (same seed)
BIG_ENDIAN_FLAME = "Okay02_SEN01"  # equal to GOOD[1]
REINGESTED = "Again01_SEN01"


@dataclass(frozen=True)
class Case:
    name: str
    key: str
    asset: str  # the asset that must fail
    where: str  # the file or folder (relative to the sequence folder) the message must name
    damage: Callable[[Path], None]  # applied to the sequence folder after it is written
    expect: tuple[str, ...]  # further substrings of the message


def _frame(lane: Path, number: int, suffix: str) -> str:
    return str(bad.frame(lane, number, suffix))


def _at(where: str, build: Callable[..., None], *args) -> Callable[[Path], None]:
    return lambda seq: build(seq / where, *args)


def _remove(where: str) -> Callable[[Path], None]:
    return lambda seq: shutil.rmtree(seq / where) if (seq / where).is_dir() else (seq / where).unlink()


def _duplicate_frame(seq: Path) -> None:
    folder = seq / bad.NPHM_EXPRESSIONS
    shutil.copy(folder / "frame_0003.npz", folder / "frame_3.npz")


def _two_audio_files(seq: Path) -> None:
    audio = seq / bad.AUDIO
    shutil.copy(audio, audio.with_name("take1.wav"))
    audio.rename(audio.with_name("take2.wav"))


def _other_identity(path: Path) -> None:
    bad.rewrite_npz(path, identity=np.ones(1344, np.float32))


AUDIO, NPZ, NPHM_MESHES = str(bad.AUDIO), str(bad.NPHM_EXPRESSIONS), str(bad.NPHM_MESHES)
TEMPLATE, FLAME_MESHES = str(bad.FLAME_TEMPLATE), str(bad.FLAME_MESHES)
SECONDS = N_FRAMES / 24

CASES = [
    # --- audio (cleaned_audio)
    Case("wav_truncated", "Bad01_SEN01", "cleaned_audio", AUDIO, _at(AUDIO, bad.truncate, 0.5), ("truncated WAV",)),
    Case("wav_empty", "Bad02_SEN01", "cleaned_audio", AUDIO, _at(AUDIO, bad.write_empty), ("empty (0 bytes)",)),
    Case("wav_is_text", "Bad03_SEN01", "cleaned_audio", AUDIO, _at(AUDIO, bad.write_text), ("not an audio file",)),
    Case(
        "wav_is_garbage", "Bad04_SEN01", "cleaned_audio", AUDIO, _at(AUDIO, bad.write_garbage), ("not an audio file",)
    ),
    Case(
        "wav_silent",
        "Bad05_SEN01",
        "cleaned_audio",
        AUDIO,
        _at(AUDIO, bad.write_silent_wav, SECONDS),
        ("silent", "digital silence"),
    ),
    Case(
        "wav_nan", "Bad06_SEN01", "cleaned_audio", AUDIO, _at(AUDIO, bad.write_nan_wav, SECONDS), ("1 NaN/Inf samples",)
    ),
    Case(
        "wav_very_long",
        "Bad07_SEN01",
        "cleaned_audio",
        AUDIO,
        _at(AUDIO, bad.write_very_long_wav),
        ("too long", "1300.0 s", "limit is 1200.0 s"),
    ),
    Case(
        "wav_header_claims_4gb",
        "Bad08_SEN01",
        "cleaned_audio",
        AUDIO,
        _at(AUDIO, bad.write_wav_claiming_huge_length),
        ("truncated WAV", "announces"),
    ),
    Case("audio_missing", "Bad09_SEN01", "cleaned_audio", "audio", _remove(AUDIO), ("no audio file",)),
    Case(
        "audio_ambiguous",
        "Bad10_SEN01",
        "cleaned_audio",
        "audio",
        _two_audio_files,
        ("several audio files", "take1.wav, take2.wav"),
    ),
    # --- NPHM expression codes (nphm_expressions)
    Case("npz_folder_missing", "Bad01_SEN01", "nphm_expressions", NPZ, _remove(NPZ), ("folder is missing",)),
    Case(
        "npz_duplicate_frame",
        "Bad02_SEN01",
        "nphm_expressions",
        NPZ,
        _duplicate_frame,
        ("duplicate frame numbers", "frame_0003.npz and frame_3.npz"),
    ),
    Case(
        "npz_gap",
        "Bad03_SEN01",
        "nphm_expressions",
        NPZ,
        _remove(_frame(Path(NPZ), 5, ".npz")),
        ("gap in frame numbers", "first missing: 5"),
    ),
    Case(
        "npz_wrong_keys",
        "Bad04_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 2, ".npz"),
        _at(
            _frame(Path(NPZ), 2, ".npz"),
            lambda p: bad.rewrite_npz(p, drop=("expression",), something_else=np.zeros(200, np.float32)),
        ),
        ("no expression code", "keys found: identity, something_else"),
    ),
    Case(
        "npz_wrong_dims",
        "Bad05_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 2, ".npz"),
        _at(_frame(Path(NPZ), 2, ".npz"), lambda p: bad.rewrite_npz(p, expression=np.zeros((2, 100), np.float32))),
        ("'expression' has shape (2, 100)", "expected (200,)"),
    ),
    Case(
        "npz_wrong_dtype",
        "Bad06_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 2, ".npz"),
        _at(_frame(Path(NPZ), 2, ".npz"), lambda p: bad.rewrite_npz(p, expression=np.zeros(200, np.int32))),
        ("dtype int32", "expected a float array"),
    ),
    Case(
        "npz_nan",
        "Bad07_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 4, ".npz"),
        _at(_frame(Path(NPZ), 4, ".npz"), lambda p: bad.rewrite_npz(p, expression=np.full(200, np.nan, np.float32))),
        ("expression code contains NaN or Inf",),
    ),
    Case(
        "npz_is_garbage",
        "Bad08_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 1, ".npz"),
        _at(_frame(Path(NPZ), 1, ".npz"), bad.write_garbage),
        ("not a readable npz",),
    ),
    Case(
        "npz_object_array",
        "Bad09_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 3, ".npz"),
        _at(_frame(Path(NPZ), 3, ".npz"), bad.write_object_npz),
        ("object array", "not allowed"),
    ),
    Case(
        "npz_two_identities",
        "Bad10_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 6, ".npz"),
        _at(_frame(Path(NPZ), 6, ".npz"), _other_identity),
        ("identity code differs", "single identity"),
    ),
    Case(
        "npz_truncated",
        "Bad11_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 0, ".npz"),
        _at(_frame(Path(NPZ), 0, ".npz"), bad.truncate, 0.6),
        ("not a readable npz",),
    ),
    Case(
        "npz_declares_40gb_array",
        "Bad13_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 0, ".npz"),
        _at(_frame(Path(NPZ), 0, ".npz"), bad.write_npz_claiming_huge_array),
        ("declares shape (10000000000,)", "holds 800 bytes"),
    ),
    Case(
        "npz_zip_bomb",
        "Bad14_SEN01",
        "nphm_expressions",
        _frame(Path(NPZ), 0, ".npz"),
        _at(_frame(Path(NPZ), 0, ".npz"), bad.write_npz_zip_bomb),
        ("inflates to more than",),
    ),
    Case("zero_frames", "Bad12_SEN01", "nphm_expressions", NPZ, lambda seq: None, ("no frame_<n>.npz files found",)),
    # --- FLAME meshes (flame_vertices)
    Case(
        "ply_is_garbage",
        "Bad01_SEN01",
        "flame_vertices",
        _frame(Path(FLAME_MESHES), 3, ".ply"),
        _at(_frame(Path(FLAME_MESHES), 3, ".ply"), bad.write_garbage),
        ("not a PLY file",),
    ),
    Case(
        "ply_other_topology",
        "Bad02_SEN01",
        "flame_vertices",
        _frame(Path(FLAME_MESHES), 4, ".ply"),
        _at(_frame(Path(FLAME_MESHES), 4, ".ply"), bad.write_other_topology_ply),
        ("has 25 vertices, expected 36",),
    ),
    Case(
        "ply_other_faces",
        "Bad03_SEN01",
        "flame_vertices",
        _frame(Path(FLAME_MESHES), 0, ".ply"),
        _at(_frame(Path(FLAME_MESHES), 0, ".ply"), bad.write_reordered_faces_ply),
        ("faces differ from the FLAME template",),
    ),
    Case(
        "ply_truncated",
        "Bad04_SEN01",
        "flame_vertices",
        _frame(Path(FLAME_MESHES), 2, ".ply"),
        _at(_frame(Path(FLAME_MESHES), 2, ".ply"), bad.truncate, 0.7),
        ("truncated body",),
    ),
    Case(
        "ply_nan",
        "Bad05_SEN01",
        "flame_vertices",
        _frame(Path(FLAME_MESHES), 6, ".ply"),
        _at(_frame(Path(FLAME_MESHES), 6, ".ply"), bad.write_nan_ply),
        ("NaN or Inf",),
    ),
    Case(
        "flame_template_missing",
        "Bad06_SEN01",
        "flame_vertices",
        TEMPLATE,
        _remove(TEMPLATE),
        ("FLAME template is missing",),
    ),
    Case(
        "flame_frames_missing",
        "Bad07_SEN01",
        "flame_vertices",
        FLAME_MESHES,
        _remove(FLAME_MESHES),
        ("folder is missing",),
    ),
    Case(
        "flame_template_is_text",
        "Bad08_SEN01",
        "flame_vertices",
        TEMPLATE,
        _at(TEMPLATE, bad.write_text),
        ("not a PLY file",),
    ),
    # --- NPHM meshes (nphm_meshes)
    Case(
        "mesh_faces_out_of_range",
        "Bad01_SEN01",
        "nphm_meshes",
        _frame(Path(NPHM_MESHES), 2, ".ply"),
        _at(_frame(Path(NPHM_MESHES), 2, ".ply"), bad.write_out_of_range_faces_ply),
        ("outside [0, 36)",),
    ),
    Case(
        "mesh_empty_file",
        "Bad02_SEN01",
        "nphm_meshes",
        _frame(Path(NPHM_MESHES), 0, ".ply"),
        _at(_frame(Path(NPHM_MESHES), 0, ".ply"), bad.write_empty),
        ("not a PLY file",),
    ),
    Case(
        "mesh_truncated",
        "Bad03_SEN01",
        "nphm_meshes",
        _frame(Path(NPHM_MESHES), 1, ".ply"),
        _at(_frame(Path(NPHM_MESHES), 1, ".ply"), bad.truncate, 0.5),
        ("truncated",),
    ),
    Case(
        "mesh_nan",
        "Bad04_SEN01",
        "nphm_meshes",
        _frame(Path(NPHM_MESHES), 5, ".ply"),
        _at(_frame(Path(NPHM_MESHES), 5, ".ply"), bad.write_nan_ply),
        ("NaN or Inf",),
    ),
    Case(
        "mesh_claims_4e9_faces",
        "Bad06_SEN01",
        "nphm_meshes",
        _frame(Path(NPHM_MESHES), 0, ".ply"),
        _at(_frame(Path(NPHM_MESHES), 0, ".ply"), bad.write_ply_claiming_faces),
        ("declares 4000000000 rows but only 50 could be read",),
    ),
    Case(
        "mesh_gap",
        "Bad05_SEN01",
        "nphm_meshes",
        NPHM_MESHES,
        _remove(_frame(Path(NPHM_MESHES), 9, ".ply")),
        ("gap in frame numbers", "first missing: 9"),
    ),
    # --- audio vs motion (audio_features): 5 s of audio for 1 s of motion
    Case(
        "audio_motion_apart",
        "Drift01_SEN01",
        "audio_features",
        AUDIO,
        lambda seq: None,
        ("Drift01_SEN01", "+4.00 s apart", "more than the 1.0 s allowed"),
    ),
]

SEQUENCE_OPTIONS = {
    "Bad12_SEN01": dict(n_frames=0, audio_seconds=SECONDS, flame=False, nphm_meshes=False),
    "Drift01_SEN01": dict(audio_seconds=5.0),
}

# Folder names the scanner must refuse (never a partition, never a store path), and why.
REJECTED = {
    "ID..escape_SEN01": "path traversal",
    "ID01_..": "path traversal",
    "bad name_SEN01": "expected <IDName>_<SequenceName>",
    "NoIdentity": "expected <IDName>_<SequenceName>",
    "ID01_Säge": "expected <IDName>_<SequenceName>",
    "ID01_a;rm -rf ~": "expected <IDName>_<SequenceName>",
    "-ID01_SEN01": "expected <IDName>_<SequenceName>",
    "ID01_$(touch x)": "expected <IDName>_<SequenceName>",
    "ID01_" + "x" * 200: "name must be 1-200 characters",
}


def _write_ascii_flame(seq: Path) -> None:
    from ops.tracking.ply import read_ply

    for path in [seq / bad.FLAME_TEMPLATE, *sorted((seq / bad.FLAME_MESHES).iterdir())]:
        mesh = read_ply(path)
        bad.write_ascii_ply(path, mesh.vertices, mesh.faces)


def _write_big_endian_flame_and_ascii_meshes(seq: Path) -> None:
    from ops.tracking.ply import read_ply

    for path in [seq / bad.FLAME_TEMPLATE, *sorted((seq / bad.FLAME_MESHES).iterdir())]:
        mesh = read_ply(path)
        bad.write_big_endian_ply(path, mesh.vertices, mesh.faces)
    for path in sorted((seq / bad.NPHM_MESHES).iterdir()):
        mesh = read_ply(path)
        bad.write_ascii_ply(path, mesh.vertices, mesh.faces)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass
class Ingested:
    data: Path
    store: SequenceStore
    instance: DagsterInstance
    summary: IngestSummary
    marker: Path  # created only if something unpickles the malicious features file
    reingested_before: dict[str, str]  # file digests of REINGESTED's store before its inputs broke

    def failures(self, key: str) -> dict[str, str]:
        """asset -> message of each failed step of `key`."""
        return dict(line.split(": ", 1) for line in self.summary.failed.get(key, []))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, tiny_encoder_dir) -> Ingested:
    root = tmp_path_factory.mktemp("bad_inputs")
    data, marker = root / "data", root / "pickle_was_executed"
    for seed, key in enumerate(GOOD):
        write_sequence(data, key, N_FRAMES, seed=seed)
    write_sequence(data, ASCII_FLAME, N_FRAMES, seed=0)
    _write_ascii_flame(data / ASCII_FLAME)
    bad.write_clipped_wav(data / ASCII_FLAME / bad.AUDIO, SECONDS)
    bad.write_malicious_pickle(data / ASCII_FLAME / bad.PICKLED_FEATURES, marker)
    write_sequence(data, BIG_ENDIAN_FLAME, N_FRAMES, seed=1)
    _write_big_endian_flame_and_ascii_meshes(data / BIG_ENDIAN_FLAME)

    for key in sorted({case.key for case in CASES}):
        write_sequence(data, key, **{"n_frames": N_FRAMES, "seed": 3, **SEQUENCE_OPTIONS.get(key, {})})
    for case in CASES:
        case.damage(data / case.key)
    for name in REJECTED:
        (data / name).mkdir()
    (data / "_meta").mkdir()  # ignored entries: neither sequences nor rejections
    (data / ".cache").mkdir()
    (data / "README.txt").write_text("not a sequence")

    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(root / "store")),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }
    instance = DagsterInstance.ephemeral()
    store = SequenceStore(root / "store")

    write_sequence(data, REINGESTED, N_FRAMES, seed=4)
    first = ingest_sequences(instance, resources, data, only=[REINGESTED], progress=lambda line: None)
    assert first.succeeded == [REINGESTED], first.failed
    before = _tree_digest(store.group_path(REINGESTED))
    seq = data / REINGESTED
    bad.truncate(seq / bad.AUDIO, 0.5)
    bad.write_garbage(bad.frame(seq / bad.NPHM_EXPRESSIONS, 1, ".npz"))
    bad.write_garbage(bad.frame(seq / bad.FLAME_MESHES, 2, ".ply"))

    summary = ingest_sequences(instance, resources, data, progress=lambda line: None)
    return Ingested(data, store, instance, summary, marker, before)


# ----------------------------------------------------------------------------------------- cases


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_clearly_without_partial_store(ingested: Ingested, case: Case):
    failures = ingested.failures(case.key)
    assert case.asset in failures, f"{case.key}: expected {case.asset} to fail; failures: {failures}"
    message = failures[case.asset]
    assert str(ingested.data / case.key / case.where) in message, message  # names the file or folder
    for text in case.expect:
        assert text in message, message
    # The sequence fails with exactly the assets its damages target (the others are independent).
    assert set(failures) == {c.asset for c in CASES if c.key == case.key}, failures
    assert not ingested.store.component_path(case.key, COMPONENT_OF[case.asset]).exists()
    if case.asset in FEEDS_AUDIO_FEATURES:  # skipped downstream: nothing written either
        assert not ingested.store.component_path(case.key, "audio_features").exists()


def test_good_and_unusual_but_valid_sequences_ingest(ingested: Ingested):
    expected = sorted([*GOOD, ASCII_FLAME, BIG_ENDIAN_FLAME])
    assert sorted(ingested.summary.succeeded) == expected, ingested.summary.failed
    assert set(ingested.summary.failed) == {c.key for c in CASES} | {REINGESTED}
    # REINGESTED failed this time but keeps every component from its earlier, good run.
    assert ingested.store.sequences_with(*COMPONENTS) == sorted([*expected, REINGESTED])
    # ASCII and big-endian PLY decode to exactly the vertices of their binary twins (same seed).
    for unusual, twin in ((ASCII_FLAME, GOOD[0]), (BIG_ENDIAN_FLAME, GOOD[1])):
        for name in ("vertices", "template", "faces"):
            np.testing.assert_array_equal(
                ingested.store.read(unusual, "flame", name), ingested.store.read(twin, "flame", name)
            )
    for name in ("n_vertices", "n_faces", "bounds"):  # the mesh index (meshes are kept by reference)
        np.testing.assert_array_equal(
            ingested.store.read(BIG_ENDIAN_FLAME, "nphm_meshes", name),
            ingested.store.read(GOOD[1], "nphm_meshes", name),
        )


def test_no_temporaries_left_in_the_store(ingested: Ingested):
    leftovers = [p for p in ingested.store.root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_clipping_is_reported_in_metadata_not_refused(ingested: Ingested):
    records = ingested.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("cleaned_audio"), asset_partitions=[ASCII_FLAME]), limit=1
    ).records
    metadata = records[0].asset_materialization.metadata
    assert metadata["clipping_ratio"].value > 0.1  # the source was driven 10x past full scale
    assert metadata["output_peak"].value <= 10 ** (-1 / 20) + 1e-6  # limited to -1 dBFS after cleaning
    clean = ingested.store.attrs(GOOD[0], "audio")
    assert clean["clipping_ratio"] == 0.0


def test_malicious_pickle_is_never_executed(ingested: Ingested):
    pkl = ingested.data / ASCII_FLAME / bad.PICKLED_FEATURES
    assert ASCII_FLAME in ingested.summary.succeeded
    assert not ingested.marker.exists()
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle: it references the global io\.open"):
        load_numpy_pickle(pkl)
    assert not ingested.marker.exists()
    pickle.loads(pkl.read_bytes())  # the file is live: the stock unpickler runs it
    assert ingested.marker.exists()


def test_previous_store_is_kept_byte_for_byte_when_inputs_break(ingested: Ingested):
    failures = ingested.failures(REINGESTED)
    assert set(failures) == {"cleaned_audio", "nphm_expressions", "flame_vertices"}, failures
    seq = ingested.data / REINGESTED
    assert str(seq / bad.AUDIO) in failures["cleaned_audio"] and "truncated WAV" in failures["cleaned_audio"]
    assert str(bad.frame(seq / bad.NPHM_EXPRESSIONS, 1, ".npz")) in failures["nphm_expressions"]
    assert str(bad.frame(seq / bad.FLAME_MESHES, 2, ".ply")) in failures["flame_vertices"]
    assert _tree_digest(ingested.store.group_path(REINGESTED)) == ingested.reingested_before


def test_unsafe_folder_names_are_rejected_with_a_reason(ingested: Ingested):
    rejected = dict(ingested.summary.rejected)
    assert set(rejected) == set(REJECTED)
    for name, reason in REJECTED.items():
        assert reason in rejected[name], rejected[name]
    partitions = set(ingested.instance.get_dynamic_partitions("sequences"))
    assert partitions.isdisjoint(REJECTED) and not partitions & {"_meta", ".cache", "README.txt"}
    stored = {p.name for p in ingested.store.sequences_dir.iterdir()}
    assert all(f"{name}.zarr" not in stored for name in REJECTED)


def test_store_root_that_is_a_file_fails_clearly(tmp_path, tiny_encoder_dir):
    data, store_file = tmp_path / "data", tmp_path / "store"
    write_sequence(data, GOOD[0], N_FRAMES)
    store_file.write_text("a file where the store root should be")
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(store_file)),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }
    instance = DagsterInstance.ephemeral()
    with pytest.raises(NotADirectoryError, match="is not a directory") as raised:
        ingest_sequences(instance, resources, data, progress=lambda line: None)
    assert str(store_file) in str(raised.value)
    assert instance.get_runs() == []  # refused before any work
    assert store_file.read_text() == "a file where the store root should be"


def test_unreadable_encoder_weights_fail_clearly(tmp_path):
    data, encoder = tmp_path / "data", tmp_path / "encoder"
    write_sequence(data, GOOD[0], N_FRAMES, nphm_meshes=False)
    encoder.mkdir()
    (encoder / "config.json").write_text("{not json")
    (encoder / "model.safetensors").write_bytes(b"not weights")
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(encoder)),
    }
    summary = ingest_sequences(DagsterInstance.ephemeral(), resources, data, progress=lambda line: None)
    (message,) = summary.failed[GOOD[0]]
    assert message.startswith("audio_features: ") and str(encoder) in message and "config.json" in message, message
