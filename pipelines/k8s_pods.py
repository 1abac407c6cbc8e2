"""What the `gpu` pool's steps ask of a Kubernetes cluster: one GPU, on a GPU node.

The `dagster-k8s/config` tag is read by dagster-k8s only: `K8sRunLauncher` applies a run's tags
to the run's pod (the `retrain` job carries it), `k8s_job_executor` applies an op's tags to that
step's pod (the model assets carry it). Elsewhere (local runs, the multiprocess executor) it is
inert metadata.

`FACETALK_GPU_NODE_SELECTOR` (`label=value,label=value`) names the GPU nodes; the default is the
label NVIDIA's GPU operator / device plugin puts on them. The GPU resource limit alone already
keeps the pod off nodes without GPUs; the toleration lets it onto GPU nodes tainted for GPU work.
"""

from __future__ import annotations

import os
from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"
NODE_SELECTOR_ENV = "FACETALK_GPU_NODE_SELECTOR"
DEFAULT_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}


def gpu_node_selector() -> dict[str, str]:
    raw = os.environ.get(NODE_SELECTOR_ENV, "").strip()
    if not raw:
        return dict(DEFAULT_NODE_SELECTOR)
    selector = {}
    for pair in raw.split(","):
        label, sep, value = pair.strip().partition("=")
        if not sep or not label:
            raise ValueError(f"{NODE_SELECTOR_ENV} must be label=value[,label=value...], got {raw!r}")
        selector[label] = value
    return selector


def gpu_tolerations() -> list[dict[str, str]]:
    """Lets a pod onto GPU nodes tainted for GPU work."""
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def gpu_pod_config() -> dict[str, Any]:
    """The `dagster-k8s/config` value for a pod that trains on one GPU."""
    return {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": gpu_node_selector(), "tolerations": gpu_tolerations()},
    }


def gpu_tags() -> dict[str, Any]:
    return {K8S_CONFIG_TAG: gpu_pod_config()}
