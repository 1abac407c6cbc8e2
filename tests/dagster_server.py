"""Run `dagster dev` on loopback for a test, and talk to it over GraphQL.

The server runs in its own process group, so stopping it reaches the webserver, the daemon and
the code server that `dagster dev` spawns, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # never bind beyond loopback in tests
FINISHED_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


class DagsterServerError(RuntimeError):
    """The server did not come up, a GraphQL call failed, or a run did not succeed."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class DagsterServer:
    url: str  # e.g. http://127.0.0.1:41234
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, n_chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-n_chars:]


# `dagster dev` maps SIGTERM to whatever SIGINT does; a process started in the background
# inherits SIGINT *ignored*, and then SIGTERM is ignored too. Reset both before exec (a shell's
# `trap -` cannot: signals ignored at a non-interactive shell's entry stay ignored).
_EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys; "
    "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def start_dagster_dev(
    workspace: Path, env: Mapping[str, str], log_path: Path, port: int | None = None
) -> DagsterServer:
    """`dagster dev` (webserver + daemon + code server) on 127.0.0.1 in a new session, output to `log_path`."""
    port = port or free_port()
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", HOST, "-p", str(port)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, *command], env=dict(env), cwd=workspace.parent,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    return DagsterServer(url=f"http://{HOST}:{port}", process=process, log_path=log_path)


def mark_community_prompt_seen(dagster_home: Path) -> None:
    """Pre-answer the UI's one-time "Join the Dagster community" dialog, which would cover the page."""
    nux = Path(dagster_home) / ".nux"
    nux.mkdir(parents=True, exist_ok=True)
    (nux / "nux.yaml").write_text("seen: 1\n")  # what dagster._core.nux.set_nux_seen writes


def stop_process_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by `process`, then SIGKILL what is left after `timeout`."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    if group != process.pid:  # only a group this process leads (start_new_session) is ours to signal
        raise DagsterServerError(f"process {process.pid} does not lead its process group; not signalling group {group}")
    _signal_group(group, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # `dagster dev` may exit before its children do; give them the same grace, then kill.
    deadline = time.monotonic() + timeout
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(group):
        _signal_group(group, signal.SIGKILL)
    process.wait(timeout=5)


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def running_dagster_dev(workspace: Path, env: Mapping[str, str], log_path: Path) -> Iterator[DagsterServer]:
    """A started server (call `wait_until_ready` before using it); its process group is stopped on exit, also on error."""
    server = start_dagster_dev(workspace, env, log_path)
    try:
        yield server
    finally:
        stop_process_group(server.process)


def wait_until_ready(server: DagsterServer, location: str, timeout: float) -> None:
    """The webserver answers and the code location `location` has loaded, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    wait_until_serving(server, timeout)
    wait_for_code_location(server, location, max(deadline - time.monotonic(), 1.0))


def wait_until_serving(server: DagsterServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise DagsterServerError(f"dagster dev exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise DagsterServerError(f"{server.url}/server_info did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def graphql(
    server: DagsterServer, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60.0
) -> dict:
    """POST one GraphQL request; return `data`, or raise with the server's errors."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(f"{server.url}/graphql", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:  # GraphQL validation errors come back as HTTP 400 with a body
        answer = json.loads(error.read() or b"{}")
    if answer.get("errors"):
        raise DagsterServerError(f"GraphQL errors: {json.dumps(answer['errors'], indent=1)[:4000]}")
    return answer["data"]


LOCATION_STATUS_QUERY = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def wait_for_code_location(server: DagsterServer, location: str, timeout: float) -> None:
    """Wait until the code location has loaded; raise with its load error if it failed."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while time.monotonic() < deadline:
        workspace = graphql(server, LOCATION_STATUS_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise DagsterServerError(f"workspace failed to load: {workspace.get('message')}")
        seen = workspace["locationEntries"]
        entry = next((e for e in seen if e["name"] == location), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise DagsterServerError(f"code location {location!r} failed to load:\n{loaded['message']}")
            return
        time.sleep(0.5)
    raise DagsterServerError(f"code location {location!r} not loaded within {timeout:.0f} s; workspace: {seen}")


LAUNCH_RUN_MUTATION = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

IMPLICIT_ASSET_JOB = "__ASSET_JOB"  # the job Dagster builds over every asset in a repository


def launch_asset_run(
    server: DagsterServer,
    asset_paths: list[list[str]],
    run_config: Mapping[str, Any] | None = None,
    location: str = "facetalk",
    repository: str = "__repository__",
) -> str:
    """Materialize the assets at `asset_paths` (as the UI's "Materialize" button does); return the run id."""
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": repository,
            "jobName": IMPLICIT_ASSET_JOB,
            "assetSelection": [{"path": path} for path in asset_paths],
        },
        "runConfigData": dict(run_config or {}),
        "mode": "default",
    }
    result = graphql(server, LAUNCH_RUN_MUTATION, {"executionParams": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        details = result.get("errors") or result.get("message")
        raise DagsterServerError(f"launchRun returned {result['__typename']}: {details}")
    return result["run"]["runId"]


def launch_job_run(
    server: DagsterServer,
    job: str,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    location: str = "facetalk",
    repository: str = "__repository__",
) -> str:
    """Submit a run of `job` (a partition through the `dagster/partition` tag), as the UI's Launchpad
    does: with the queued run coordinator it waits in the queue until the daemon starts it."""
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job},
        "runConfigData": dict(run_config or {}),
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = graphql(server, LAUNCH_RUN_MUTATION, {"executionParams": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        details = result.get("errors") or result.get("message")
        raise DagsterServerError(f"launchRun of {job} returned {result['__typename']}: {details}")
    return result["run"]["runId"]


ASSET_NODES_QUERY = """
query AssetNodes {
  assetNodes { assetKey { path } groupName isPartitioned }
}
"""


@dataclass(frozen=True)
class AssetNode:
    name: str  # the asset key's path joined by "/"
    group: str
    is_partitioned: bool


def asset_nodes(server: DagsterServer) -> list[AssetNode]:
    """Every asset the server's code locations define: what the UI's catalog and graphs should show."""
    nodes = graphql(server, ASSET_NODES_QUERY)["assetNodes"]
    return [AssetNode("/".join(n["assetKey"]["path"]), n["groupName"], n["isPartitioned"]) for n in nodes]


RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on Error { message }
  }
}
"""

RUN_LOGS_QUERY = """
query RunLogs($runId: ID!, $afterCursor: String) {
  logsForRun(runId: $runId, afterCursor: $afterCursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message stack causes { message stack } } }
        ... on RunFailureEvent { pipelineName }
      }
    }
    ... on Error { message }
  }
}
"""


def run_status(server: DagsterServer, run_id: str) -> str:
    result = graphql(server, RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
    if result["__typename"] != "Run":
        raise DagsterServerError(f"run {run_id}: {result['__typename']}: {result.get('message')}")
    return result["status"]


def run_log_lines(server: DagsterServer, run_id: str) -> list[str]:
    """Every event of the run as `LEVEL step: message` (+ error texts and stacks for step failures)."""
    lines: list[str] = []
    cursor = None
    while True:
        result = graphql(server, RUN_LOGS_QUERY, {"runId": run_id, "afterCursor": cursor})["logsForRun"]
        if result["__typename"] != "EventConnection":
            return [*lines, f"logsForRun: {result['__typename']}: {result.get('message')}"]
        for event in result["events"]:
            lines.append(f"{event.get('level', '?')} {event.get('stepKey') or '-'}: {event.get('message', '')}")
            if error := event.get("error"):  # the framework's wrapper, then the exceptions that caused it
                for part in [error, *(error.get("causes") or [])]:
                    lines.append(part["message"] + "".join(part.get("stack") or []))
        cursor = result["cursor"]
        if not result["hasMore"]:
            return lines


def wait_for_run(server: DagsterServer, run_id: str, timeout: float) -> str:
    """Poll until the run finishes; raise with its event log unless it succeeded."""
    deadline = time.monotonic() + timeout
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        status = run_status(server, run_id)
        if status in FINISHED_RUN_STATUSES:
            break
        time.sleep(1.0)
    if status != "SUCCESS":
        log = "\n".join(run_log_lines(server, run_id))
        waited = "" if status in FINISHED_RUN_STATUSES else f" after {timeout:.0f} s"
        raise DagsterServerError(
            f"run {run_id} is {status}{waited}; its events:\n{log[-8000:]}\nserver log:\n{server.log_tail()}"
        )
    return status
