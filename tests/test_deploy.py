"""deploy/: what can be checked without a cluster.

- Every YAML file parses; the Helm values name what README's "Scaling out" says they do.
- deploy/instance/dagster.yaml loads with DagsterInstance against a real PostgreSQL (loopback).
- Its K8sRunLauncher config resolves against dagster-k8s's schema, the launcher is constructed
  (from a kubeconfig that names no reachable cluster: nothing is contacted), and the Kubernetes Job
  it would create for a `retrain` run is built: on a GPU node, with one GPU, the S3 secret and the
  data volumes.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.jobs import retrain_job
from pipelines.k8s_pods import K8S_CONFIG_TAG, NODE_SELECTOR_ENV, gpu_node_selector, gpu_pod_config
from tests.postgres_server import postgres_bin_dir, running_postgres

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
IMAGE = "registry.example.com/facetalk:0.1.0"

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def test_every_yaml_in_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {f.relative_to(DEPLOY).as_posix() for f in files} >= {"helm/values.yaml", "instance/dagster.yaml"}
    for file in files:
        assert isinstance(yaml.safe_load(file.read_text()), dict), file


def test_helm_values_deploy_the_pieces_the_readme_names():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["--module-name", "pipelines"]
    env = {e["name"]: e["value"] for e in code["env"]}
    assert env["FACETALK_STORE"].startswith("s3://") and code["includeConfigInLaunchedRuns"]["enabled"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["pools"]["defaultLimit"] == 1
    assert values["postgresql"]["postgresqlDatabase"] == "dagster"


def test_gpu_pod_config_and_its_setting(monkeypatch):
    monkeypatch.delenv(NODE_SELECTOR_ENV, raising=False)
    assert gpu_node_selector() == {"nvidia.com/gpu.present": "true"}
    monkeypatch.setenv(NODE_SELECTOR_ENV, "cloud.google.com/gke-accelerator=nvidia-l4, pool=train")
    assert gpu_node_selector() == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "train"}
    monkeypatch.setenv(NODE_SELECTOR_ENV, "gpu")
    with pytest.raises(ValueError, match=NODE_SELECTOR_ENV):
        gpu_pod_config()


def _instance_config() -> dict:
    return yaml.safe_load((DEPLOY / "instance" / "dagster.yaml").read_text())


@pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL server binaries under /usr/lib/postgresql")
def test_instance_yaml_loads_with_dagster_instance(tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresRunStorage

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "instance" / "dagster.yaml", home / "dagster.yaml")
    with running_postgres(postgres_bin_dir()) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        with DagsterInstance.from_config(str(home)) as instance:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 16
            assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
            launcher_data = instance.get_ref().run_launcher_data
            assert (launcher_data.module_name, launcher_data.class_name) == ("dagster_k8s", "K8sRunLauncher")


@pytest.mark.skipif(importlib.util.find_spec("dagster_k8s") is None, reason="needs dagster-k8s (the dev or k8s extra)")
def test_run_launcher_config_resolves_to_a_gpu_job_for_retrain(tmp_path):
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job

    launcher_config = _instance_config()["run_launcher"]["config"]
    resolved = process_config(K8sRunLauncher.config_type(), launcher_config)
    assert resolved.success, [error.message for error in resolved.errors]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)  # in the cluster: load_incluster_config (the service account)
    config = {**resolved.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    launcher = K8sRunLauncher(**config)

    run = DagsterRun(job_name="retrain", run_id="0123abcd-0000-4000-8000-000000000000", tags=retrain_job.tags)
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-0123abcd",
        user_defined_k8s_config=context.run_k8s_config,
    )
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == IMAGE and context.namespace == "facetalk"
    assert pod.node_selector == gpu_pod_config()["pod_spec_config"]["node_selector"]
    assert any(t.key == "nvidia.com/gpu" for t in pod.tolerations)
    assert container.resources.limits["nvidia.com/gpu"] == "1" and container.resources.requests["cpu"] == "2"
    assert [source.secret_ref.name for source in container.env_from if source.secret_ref] == ["facetalk-s3"]
    env = {e.name: e.value for e in container.env}
    assert env["FACETALK_STORE"] == "s3://facetalk-store/store" and env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert {v.name for v in pod.volumes} >= {"data", "models"} and job.spec.ttl_seconds_after_finished == 86400
    assert K8S_CONFIG_TAG in retrain_job.tags
