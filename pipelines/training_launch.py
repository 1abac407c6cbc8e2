"""Where the model assets' training runs: a subprocess (default) or a Kubernetes pod, through Dagster Pipes.

The asset's step only launches `python -m pipelines.training_process` and waits. Logs, progress
lines (each validation's loss) and the final metadata come back through Pipes; a training process
that crashes or is killed fails the asset with its own error, and the code server and the step's
process live on. `models.train.train` publishes `model.ckpt` only at the end of a successful run,
so the previous model stays published.

`TrainingLauncher.kind` chooses the Pipes client:
- `subprocess`: `PipesSubprocessClient`, the child sharing the step's environment (the store's
  URL and credentials included) and its machine;
- `k8s`: `PipesK8sClient`, one pod per training from `image` in `namespace`, asking for `gpus`
  `nvidia.com/gpu` (plus `cpu` / `memory`), on the GPU nodes of `pipelines/k8s_pods.py`, with the
  secrets in `env_secrets` and the variables named in `env_passthrough` copied from the step's
  environment. The store must then be reachable from the pod (`s3://...`, or a volume in
  `volumes` / `volume_mounts`).

`training_launcher_from_env()` reads the deployment's choice from `FACETALK_TRAINING_*` variables
(see the README, "Training in a pod of its own"); run config may override any field per run.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import warnings
from typing import Any, Literal

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DagsterEventType,
    DagsterExecutionInterruptedError,
    Failure,
    MaterializeResult,
    PipesSubprocessClient,
)

from pipelines.k8s_pods import gpu_node_selector, gpu_tolerations
from pipelines.settings import PROJECT_ROOT

CHILD_MODULE = "pipelines.training_process"
LAUNCHER_ENV = "FACETALK_TRAINING_LAUNCHER"
IMAGE_ENV = "FACETALK_TRAINING_IMAGE"
NAMESPACE_ENV = "FACETALK_TRAINING_NAMESPACE"
GPUS_ENV = "FACETALK_TRAINING_GPUS"
SECRETS_ENV = "FACETALK_TRAINING_SECRETS"
KINDS = ("subprocess", "k8s")
# What the training pod needs from the step's environment when set there: the store and its options.
DEFAULT_PASSTHROUGH = [
    "FACETALK_STORE",
    "FACETALK_STORE_OPTIONS",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "FACETALK_LOG_LEVEL",
]
# The Pipes handler's engine event for a child that closed its session with an exception.
_CLOSED_WITH_EXCEPTION = "[pipes] external process pipes closed with exception"


class TrainingLauncher(ConfigurableResource):
    """Launches the training process through Dagster Pipes: `subprocess` (default) or `k8s` (a pod)."""

    kind: Literal["subprocess", "k8s"] = "subprocess"
    # kind: k8s
    image: str = ""  # the project's image (deploy/Dockerfile), e.g. registry.example.com/facetalk:0.1.0
    namespace: str = ""  # "" = the namespace the step runs in (or "default" outside a cluster)
    gpus: int = 1  # nvidia.com/gpu limit; 0 trains on the pod's CPUs
    cpu: str = "4"
    memory: str = "16Gi"
    env_secrets: list[str] = []  # noqa: RUF012 - pydantic copies defaults; Kubernetes secrets whose keys become the pod's env (AWS credentials)
    env_passthrough: list[str] = DEFAULT_PASSTHROUGH  # env variables copied from the step when set
    service_account: str = ""
    volumes: list[dict[str, Any]] = []  # noqa: RUF012 - raw Kubernetes volumes (camelCase or snake_case keys)
    volume_mounts: list[dict[str, Any]] = []  # noqa: RUF012
    load_incluster_config: bool | None = None  # None: in-cluster when KUBERNETES_SERVICE_HOST is set
    kubeconfig_file: str | None = None
    poll_interval_s: float = 5.0

    def command(self) -> list[str]:
        # In the pod the image's python; here the step's own interpreter (its venv).
        return ["python" if self.kind == "k8s" else sys.executable, "-m", CHILD_MODULE]

    def pod_spec(self) -> dict[str, Any]:
        """The training pod's spec, before Dagster Pipes adds the image, command and its env."""
        limits = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)
        env = [{"name": name, "value": os.environ[name]} for name in self.env_passthrough if os.environ.get(name)]
        container: dict[str, Any] = {
            "name": "training",
            "resources": {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": limits},
            "env": env,
            "env_from": [{"secret_ref": {"name": name}} for name in self.env_secrets],
        }
        if self.volume_mounts:
            container["volume_mounts"] = list(self.volume_mounts)
        spec: dict[str, Any] = {"containers": [container], "restart_policy": "Never"}
        if self.gpus:
            spec["node_selector"] = gpu_node_selector()
            spec["tolerations"] = gpu_tolerations()
        if self.volumes:
            spec["volumes"] = list(self.volumes)
        if self.service_account:
            spec["service_account_name"] = self.service_account
        return spec

    def k8s_run_arguments(self) -> dict[str, Any]:
        """`PipesK8sClient.run`'s keyword arguments (besides context and extras)."""
        if not self.image:
            raise ValueError(f"the k8s training launcher needs an image: set {IMAGE_ENV} (TrainingLauncher.image)")
        return {
            "image": self.image,
            "command": self.command(),
            "namespace": self.namespace or None,
            "base_pod_meta": {"labels": {"app.kubernetes.io/name": "facetalk", "facetalk/role": "training"}},
            "base_pod_spec": self.pod_spec(),
        }

    def train(self, context: AssetExecutionContext, request: dict[str, Any]) -> MaterializeResult:
        """Run the training process for `request` (see `pipelines.training_process`); its materialization."""
        before = _last_closed_exception_id(context)
        if self.kind == "k8s":
            from dagster_k8s import PipesK8sClient  # only the k8s path needs the kubernetes client

            arguments = self.k8s_run_arguments()  # a setting missing fails here, before any retry
            client = PipesK8sClient(
                load_incluster_config=self.load_incluster_config,
                kubeconfig_file=self.kubeconfig_file,
                poll_interval=self.poll_interval_s,
            )
        else:
            # cwd: `python -m pipelines...` finds the project even when it is not installed.
            arguments = {"command": self.command()}
            client = PipesSubprocessClient(cwd=str(PROJECT_ROOT))
        try:
            with warnings.catch_warnings():
                # Dagster's own Pipes session calls a preview API of its message readers (1.13).
                warnings.filterwarnings("ignore", message=".*expected_writer_count.*")
                invocation = client.run(context=context, extras=request, **arguments)
        except DagsterExecutionInterruptedError:
            raise  # a cancelled run: Pipes has already sent SIGINT to the child
        except Exception as error:
            failure = training_failure(context, request["asset"], error, before)
            raise failure from TrainingProcessError(failure.description)
        return invocation.get_materialize_result()


class TrainingProcessError(RuntimeError):
    """How the training process failed: its own exception, or how it ended without one."""


def training_failure(context: AssetExecutionContext, asset: str, error: Exception, after_id: int) -> Failure:
    """The asset's failure: the training process's own exception when it reported one, else how it ended.

    An exception the child raised (a bad config, a store too small) would fail again: no retry. A
    process that died without one (killed, out of memory, a lost node) is retried by the asset's
    RetryPolicy, which resumes from its last checkpoint. The Failure's cause carries the message, so
    that the CLI's and the UI's error line is the training process's, not the launcher's."""
    reported = _closed_exception(context, after_id)
    if reported is not None:
        name = reported.cls_name or "Exception"
        message = " ".join(reported.message.strip().split()) or name
        if not message.startswith(f"{name}:"):
            message = f"{name}: {message}"
        description, retry = f"{asset} training process failed: {message}", False
    else:
        description, retry = f"{asset} training process {_how_it_ended(error)}", True
    return Failure(description=description, metadata={"launcher_error": str(error)}, allow_retries=retry)


def _how_it_ended(error: Exception) -> str:
    match = re.search(r"failed with code (-?\d+)", str(error))
    if match is None:
        return f"failed: {' '.join(str(error).split())}"
    code = int(match.group(1))
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code}) before it reported an error"
    return f"exited with code {code} before it reported an error (see the step's stderr)"


def _closed_exception_records(context: AssetExecutionContext) -> list[Any]:
    records = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=10_000
    ).records
    step_key = context.get_step_execution_context().step.key
    return [
        r
        for r in records
        if r.event_log_entry.dagster_event is not None
        and r.event_log_entry.dagster_event.step_key == step_key
        and r.event_log_entry.dagster_event.message == _CLOSED_WITH_EXCEPTION
    ]


def _last_closed_exception_id(context: AssetExecutionContext) -> int:
    """So that a retry does not take the previous attempt's error for its own."""
    return max((r.storage_id for r in _closed_exception_records(context)), default=0)


def _closed_exception(context: AssetExecutionContext, after_id: int) -> Any:
    """The error the training process closed its Pipes session with (a SerializableErrorInfo), or None."""
    for record in reversed(_closed_exception_records(context)):
        if record.storage_id > after_id:
            return record.event_log_entry.dagster_event.engine_event_data.error
    return None


def training_launcher_from_env() -> TrainingLauncher:
    """The deployment's launcher: `FACETALK_TRAINING_LAUNCHER` (subprocess | k8s) and, for k8s,
    `FACETALK_TRAINING_IMAGE`, `FACETALK_TRAINING_NAMESPACE`, `FACETALK_TRAINING_GPUS` (default 1),
    `FACETALK_TRAINING_SECRETS` (comma-separated secret names)."""
    kind = os.environ.get(LAUNCHER_ENV, "").strip().lower() or "subprocess"
    if kind not in KINDS:
        raise ValueError(f"{LAUNCHER_ENV} must be one of {', '.join(KINDS)}, got {kind!r}")
    gpus = os.environ.get(GPUS_ENV, "").strip() or "1"
    if not gpus.isdigit():
        raise ValueError(f"{GPUS_ENV} must be a whole number of GPUs, got {gpus!r}")
    secrets = [s.strip() for s in os.environ.get(SECRETS_ENV, "").split(",") if s.strip()]
    return TrainingLauncher(
        kind=kind,
        image=os.environ.get(IMAGE_ENV, "").strip(),
        namespace=os.environ.get(NAMESPACE_ENV, "").strip(),
        gpus=int(gpus),
        env_secrets=secrets,
    )


def launcher_kind_from_env() -> str:
    """`subprocess` or `k8s`, as `FACETALK_TRAINING_LAUNCHER` says (checked by `training_launcher_from_env`)."""
    return os.environ.get(LAUNCHER_ENV, "").strip().lower() or "subprocess"
