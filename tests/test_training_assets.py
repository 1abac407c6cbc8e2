"""facetalk_model / flame_model through Dagster, and the retrain sensor."""

import os
import subprocess
import sys

import pytest
from dagster import DagsterEventType, RunRequest, SkipReason, build_sensor_context, materialize

from pipelines.assets.training import facetalk_model, flame_model
from pipelines.retraining import retrain_on_new_data
from pipelines.runner import failure_messages, ingest_sequences
from pipelines.settings import PROJECT_ROOT
from pipelines.training_launch import training_launcher_from_env
from tests.builders import write_sequence
from tests.training_data import (
    expected_device_type,
    ingest_for_training,
    materialization_metadata,
    step_log_messages,
)

TRAIN = {"max_steps": 12, "batch_size": 4}


@pytest.fixture
def ingested(tmp_path, tiny_encoder_dir):
    return ingest_for_training(tmp_path, tiny_encoder_dir)


_meta = materialization_metadata


def test_models_train_and_retrain_sensor_follows_new_data(ingested, tmp_path):
    instance, resources, data = ingested
    run_config = {"ops": {"facetalk_model": {"config": TRAIN}, "flame_model": {"config": TRAIN}}}
    result = materialize(
        [facetalk_model, flame_model],
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    for name in ("facetalk_model", "flame_model"):
        meta = _meta(result, name)
        # The device Lightning chose for `accelerator: auto` here: cuda on a GPU machine, cpu elsewhere.
        assert meta["steps"] == 12 and meta["requested_accelerator"] == "auto"
        assert meta["device"].split(":")[0] == expected_device_type("auto")
        assert meta["best_val_loss"] > 0 and "data:image/png;base64," in meta["loss_curve"]
        assert (tmp_path / "store" / "checkpoints" / name / "model.ckpt").is_file()
        # Trained in a Pipes child process: its logs and progress arrived as the step's logs.
        logs = step_log_messages(instance, result.run_id, name)
        assert any("[pipes] external process successfully opened dagster pipes" in line for line in logs), logs
        assert any(line.startswith("step 12/12  val_loss ") for line in logs), logs
        assert any(line.startswith("done: 12 steps") for line in logs), logs

    context = build_sensor_context(instance=instance, resources={"store": resources["store"]})
    assert isinstance(retrain_on_new_data(context), SkipReason)

    write_sequence(data, "ID7_SEN01", n_frames=96, seed=7, nphm_meshes=False)
    assert not ingest_sequences(instance, resources, data, only=["ID7_SEN01"], progress=lambda line: None).failed
    request = retrain_on_new_data(build_sensor_context(instance=instance, resources={"store": resources["store"]}))
    assert isinstance(request, RunRequest) and request.run_key.startswith("retrain:")


def test_failed_training_keeps_previous_model(ingested, tmp_path):
    instance, resources, _ = ingested
    ok = materialize(
        [facetalk_model],
        resources=resources,
        instance=instance,
        run_config={"ops": {"facetalk_model": {"config": TRAIN}}},
    )
    checkpoint = tmp_path / "store" / "checkpoints" / "facetalk_model" / "model.ckpt"
    before = checkpoint.read_bytes()
    bad = {"ops": {"facetalk_model": {"config": {**TRAIN, "batch_size": 10_000}}}}
    failed = materialize([facetalk_model], resources=resources, instance=instance, run_config=bad, raise_on_error=False)
    assert ok.success and not failed.success
    # The training process raised: the asset fails with that error (not an exit code), without a retry
    # (the same config would fail again), and the published model is the previous one.
    (message,) = failure_messages(failed)
    assert "TrainingProcessError: facetalk_model training process failed: SegmentStoreError: " in message, message
    assert "fewer than one batch" in message
    assert not [e for e in failed.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert checkpoint.read_bytes() == before

    # A retrain after a finished run trains a new model instead of resuming at max_steps.
    again = materialize(
        [facetalk_model],
        resources=resources,
        instance=instance,
        run_config={"ops": {"facetalk_model": {"config": TRAIN}}},
    )
    meta = _meta(again, "facetalk_model")
    assert meta["steps"] == 12 and meta["resumed_from"] == ""
    assert checkpoint.read_bytes() != before


def test_k8s_launcher_builds_the_training_pod_from_configuration(monkeypatch):
    """No cluster here: the pod dagster-k8s would create, from the deployment's FACETALK_TRAINING_* settings."""
    from dagster_k8s.pipes import build_pod_body
    from kubernetes.client import ApiClient

    monkeypatch.setenv("FACETALK_TRAINING_LAUNCHER", "k8s")
    monkeypatch.setenv("FACETALK_TRAINING_IMAGE", "registry.example.com/facetalk:0.1.0")
    monkeypatch.setenv("FACETALK_TRAINING_NAMESPACE", "facetalk")
    monkeypatch.setenv("FACETALK_TRAINING_GPUS", "2")
    monkeypatch.setenv("FACETALK_TRAINING_SECRETS", "facetalk-s3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.storage:9000")
    monkeypatch.setenv("FACETALK_GPU_NODE_SELECTOR", "gpu-type=h200")
    launcher = training_launcher_from_env()
    arguments = launcher.k8s_run_arguments()
    assert launcher.kind == "k8s" and arguments["namespace"] == "facetalk"
    pipes_env = {"DAGSTER_PIPES_CONTEXT": "<context>", "DAGSTER_PIPES_MESSAGES": "<messages>"}
    pod = build_pod_body(
        pod_name="dagster-run-facetalk-model",
        image=arguments["image"],
        command=arguments["command"],
        env_vars=pipes_env,
        base_pod_meta=arguments["base_pod_meta"],
        base_pod_spec=arguments["base_pod_spec"],
    )
    body = ApiClient().sanitize_for_serialization(pod)  # what the Kubernetes API receives
    (container,) = body["spec"]["containers"]
    assert container["image"] == "registry.example.com/facetalk:0.1.0"
    assert container["command"] == ["python", "-m", "pipelines.training_process"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert container["envFrom"] == [{"secretRef": {"name": "facetalk-s3"}}]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"  # the store's options reach the pod
    assert env["DAGSTER_PIPES_CONTEXT"] == "<context>" and env["DAGSTER_PIPES_MESSAGES"] == "<messages>"
    assert body["spec"]["nodeSelector"] == {"gpu-type": "h200"}
    assert body["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert body["spec"]["restartPolicy"] == "Never"
    assert body["metadata"]["labels"]["facetalk/role"] == "training"

    # A volume for a store on a PersistentVolumeClaim instead of S3; no GPU: no GPU node either.
    cpu_pod = launcher.model_copy(
        update={
            "gpus": 0,
            "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": "facetalk-store"}}],
            "volume_mounts": [{"name": "store", "mountPath": "/store"}],
        }
    ).k8s_run_arguments()["base_pod_spec"]
    body = ApiClient().sanitize_for_serialization(build_pod_body("p", "img", None, pipes_env, None, cpu_pod))
    assert "nvidia.com/gpu" not in body["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in body["spec"] and "tolerations" not in body["spec"]
    assert body["spec"]["volumes"] == [{"name": "store", "persistentVolumeClaim": {"claimName": "facetalk-store"}}]
    assert body["spec"]["containers"][0]["volumeMounts"] == [{"name": "store", "mountPath": "/store"}]

    # The step that launches the pod only waits: it no longer asks for a GPU node itself.
    code = "from pipelines.assets.training import facetalk_model; print(sorted(facetalk_model.op.tags))"
    tags = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "dagster-k8s/config" not in tags, tags


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACETALK_TRAINING_LAUNCHER": "slurm"}, "FACETALK_TRAINING_LAUNCHER must be one of subprocess, k8s"),
        ({"FACETALK_TRAINING_LAUNCHER": "k8s", "FACETALK_TRAINING_GPUS": "one"}, "FACETALK_TRAINING_GPUS"),
    ],
)
def test_bad_launcher_settings_fail_clearly(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        training_launcher_from_env()


def test_k8s_launcher_without_an_image_is_refused(monkeypatch):
    monkeypatch.setenv("FACETALK_TRAINING_LAUNCHER", "k8s")
    with pytest.raises(ValueError, match="needs an image: set FACETALK_TRAINING_IMAGE"):
        training_launcher_from_env().k8s_run_arguments()


def test_training_process_outside_dagster_says_how_to_train_by_hand():
    """The child imports torch only to train, and refuses to run without a Pipes session, saying why."""
    code = (
        "import sys, runpy; import pipelines.training_process; assert 'torch' not in sys.modules, 'torch imported'; "
        "runpy.run_module('pipelines.training_process', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "started outside Dagster Pipes" in done.stderr and "python -m models.train" in done.stderr
