"""Re-ingestion, pruning and removal through a real Dagster instance and real files (no mocks)."""

import shutil
import time

import pytest
from dagster import DagsterInstance, DeleteDynamicPartitionsRequest, build_sensor_context

from ops.tracking.ingest import EncoderSource, FeatureSettings, stale_components
from pipelines.lifecycle import UnknownSequence, remove_sequence
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import ingest_sequences
from pipelines.sensors import batch_run_request, sequence_folder_sensor
from storage.layout import sequence_folder
from storage.sequence_store import SequenceStore
from tests.builders import write_sequence

KEYS = ["ID0_SEN01", "ID1_SEN01", "ID2_SEN01"]


@pytest.fixture
def setup(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    for index, key in enumerate(KEYS):
        write_sequence(data, key, n_frames=24, seed=index, flame=index != 2, nphm_meshes=index == 0)
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }
    return data, resources, DagsterInstance.ephemeral(), SequenceStore(tmp_path / "store")


def _ingest(instance, resources, data, **kwargs):
    lines = []
    summary = ingest_sequences(instance, resources, data, progress=lines.append, **kwargs)
    return summary, lines


def test_unchanged_sequences_launch_no_runs_and_runs_carry_the_job_name(setup, tiny_encoder_dir):
    data, resources, instance, store = setup
    first, _ = _ingest(instance, resources, data)
    assert first.succeeded == KEYS and not first.failed
    runs = instance.get_runs()
    assert len(runs) == 3 and {run.job_name for run in runs} == {"ingest_sequence"}

    encoder, features = EncoderSource(tiny_encoder_dir), FeatureSettings(fps=24)
    for key in KEYS:  # the quick recipes agree with what the assets stored
        assert stale_components(sequence_folder(data, key), store, encoder, features) == []

    started = time.perf_counter()
    again, lines = _ingest(instance, resources, data)
    assert time.perf_counter() - started < 5
    assert again.unchanged == KEYS and again.succeeded == KEYS
    assert len(instance.get_runs()) == 3  # no run launched
    assert "[3/3] ID2_SEN01: unchanged" in lines and lines[-1].startswith("3 sequences: 0 ok, 3 unchanged, 0 failed")

    # A changed input makes that sequence (and only it) run again; a changed run config, all of them.
    frame = data / KEYS[1] / "nphm_tracking" / "nphm_expressions" / "frame_0003.npz"
    frame.write_bytes(frame.read_bytes())  # same content, new mtime: runs, then finds it cached by content
    assert stale_components(sequence_folder(data, KEYS[1]), store, encoder, features) == ["nphm", "audio_features"]
    third, _ = _ingest(instance, resources, data)
    assert third.unchanged == [KEYS[0], KEYS[2]] and len(instance.get_runs()) == 4
    drift, _ = _ingest(
        instance, resources, data, run_config={"ops": {"audio_features": {"config": {"max_drift_s": 0.5}}}}
    )
    assert drift.unchanged == [] and len(instance.get_runs()) == 7

    forced, _ = _ingest(instance, resources, data, only=[KEYS[0]], force=True)
    assert forced.unchanged == [] and len(instance.get_runs()) == 8


def test_prune_removes_partition_and_store_of_a_deleted_folder(setup):
    data, resources, instance, store = setup
    _ingest(instance, resources, data)
    shutil.rmtree(data / KEYS[1])

    _ingest(instance, resources, data)  # without --prune nothing is removed
    assert KEYS[1] in instance.get_dynamic_partitions("sequences") and store.group_path(KEYS[1]).exists()

    pruned, lines = _ingest(instance, resources, data, prune=True)
    assert [r.key for r in pruned.pruned] == [KEYS[1]]
    assert any(line.startswith(f"pruned {KEYS[1]} (partition + store)") for line in lines)
    assert KEYS[1] not in instance.get_dynamic_partitions("sequences")
    assert not store.group_path(KEYS[1]).exists()
    assert store.sequences_with("audio_features") == [KEYS[0], KEYS[2]]  # segments read these
    assert not list(store.sequences_dir.glob(".*"))  # nothing left aside

    removal = remove_sequence(instance, store, KEYS[0])
    assert (removal.partition, removal.store) == (True, True)
    assert store.sequences_with() == [KEYS[2]]
    with pytest.raises(UnknownSequence, match="neither a registered partition nor stored"):
        remove_sequence(instance, store, "ID9_NOPE")


def test_prune_refuses_to_empty_everything_when_the_root_looks_unmounted(setup):
    data, resources, instance, store = setup
    _ingest(instance, resources, data, only=[KEYS[0]])
    for key in KEYS:
        shutil.rmtree(data / key)
    with pytest.raises(FileNotFoundError, match="refusing to prune all 1"):
        _ingest(instance, resources, data, prune=True)
    assert store.group_path(KEYS[0]).exists()


def test_sensor_deregisters_deleted_folders_and_removes_their_store(setup):
    data, resources, instance, store = setup
    _ingest(instance, resources, data)
    sensor_resources = {"dataset": resources["dataset"], "store": resources["store"]}

    def tick(cursor=None):  # applies the partition requests as the daemon does
        context = build_sensor_context(instance=instance, cursor=cursor, resources=sensor_resources)
        result = sequence_folder_sensor(context)
        for request in getattr(result, "dynamic_partitions_requests", None) or []:
            for key in request.partition_keys:
                if isinstance(request, DeleteDynamicPartitionsRequest):
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
                else:
                    instance.add_dynamic_partitions(request.partitions_def_name, [key])
        return result

    before = batch_run_request(data, [KEYS[2]]).run_key
    shutil.rmtree(data / KEYS[2])
    result = tick()
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == [KEYS[2]] and isinstance(request, DeleteDynamicPartitionsRequest)
    assert not result.run_requests and not store.group_path(KEYS[2]).exists()

    for key in KEYS[:2]:  # everything gone at once: a broken mount, not a cleanup
        shutil.rmtree(data / key)
    guarded = tick()
    assert not getattr(guarded, "dynamic_partitions_requests", None)
    assert store.group_path(KEYS[0]).exists() and store.group_path(KEYS[1]).exists()

    write_sequence(data, KEYS[2], n_frames=24, seed=9)  # added back: a new run, not deduplicated away
    back = tick()
    (request,) = back.run_requests
    assert request.run_config["ops"]["ingest_batch"]["config"]["keys"] == [KEYS[2]]
    assert request.run_key != before  # the daemon would drop a request with a run key used before
