"""Materialize assets through a Dagster instance from the command line, so the UI shows the runs."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, ExecuteInProcessResult, RunsFilter

from ops.tracking.ingest import FeatureSettings, is_sequence_current
from pipelines import lifecycle
from pipelines.assets.ingestion import per_sequence_assets
from pipelines.ingest_pool import JOB_NAME, ingest_partitions
from pipelines.ingest_report import SequenceOutcome, failure_table, step_failures
from pipelines.lifecycle import Removal
from pipelines.partitions import sequences_partitions
from storage.layout import SequenceFolder, scan_dataset, validate_sequence_key
from storage.location import is_remote, store_path

LAUNCHED_BY, CLI, PID_TAG = "facetalk/launched_by", "facetalk", "facetalk/pid"


@dataclass
class IngestSummary:
    succeeded: list[str] = field(default_factory=list)  # ingested now or already current
    failed: dict[str, list[str]] = field(default_factory=dict)  # key -> "asset: message" lines
    rejected: list[tuple[str, str]] = field(default_factory=list)  # folder, why
    unchanged: list[str] = field(default_factory=list)  # current already: no run launched
    outcomes: list[SequenceOutcome] = field(default_factory=list)  # in the order they finished
    pruned: list[Removal] = field(default_factory=list)


def failure_messages(result: ExecuteInProcessResult) -> list[str]:
    """`asset: message` for each failed step (see `ingest_report.step_failures`)."""
    return [f"{step}: {message}" for step, message in step_failures(result)]


def require_writable_store(root) -> None:
    """Fail before any work when the store root cannot be written, instead of once per asset."""
    root = store_path(root)
    if is_remote(root):
        return  # object stores report permissions on the first write
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NotADirectoryError(f"store root {str(root)!r}: {str(existing)!r} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"store root {str(root)!r}: {str(existing)!r} is not writable")


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs a killed `facetalk` process left STARTED as failed, so the UI does not show them running."""
    orphaned = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={LAUNCHED_BY: CLI})):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, message=f"the facetalk process (pid {pid}) that ran it is gone")
            orphaned.append(run.run_id)
    return orphaned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cli_tags() -> dict[str, str]:
    return {LAUNCHED_BY: CLI, PID_TAG: str(os.getpid())}


def register_sequences(instance: DagsterInstance, keys: list[str]) -> list[str]:
    """Add the keys that are not partitions yet; return those added."""
    known = set(instance.get_dynamic_partitions(sequences_partitions.name))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(sequences_partitions.name, new)
    return new


def ingest_sequences(
    instance: DagsterInstance,
    resources: dict,
    data_root,
    only: list[str] | None = None,
    progress: Callable[[str], None] = print,
    *,
    workers: int = 1,
    run_config: dict | None = None,
    force: bool = False,
    prune: bool = False,
    verbose: bool = False,
) -> IngestSummary:
    """Register every sequence folder as a partition and run `ingest_sequence` for those not current.

    A sequence is current when every component's stored quick signature matches its inputs' file
    stats (`ops.tracking.ingest.stale_components`) and the instance has materialized its partition:
    it is reported `unchanged` without a run (`force` runs it anyway). `prune` first removes
    the known sequences whose folder is gone (partition + store). Runs go `workers` at a time.
    """
    data_root = Path(data_root)
    scan = scan_dataset(data_root)
    require_writable_store(resources["store"].path)
    run_config = ingest_run_config(run_config, verbose)
    summary = IngestSummary(rejected=scan.rejected)
    for _name, reason in scan.rejected:
        progress(f"skipped folder: {reason}")
    if prune:
        present = {s.key for s in scan.sequences}
        summary.pruned = lifecycle.prune(instance, resources["store"].sequences(), present)
        for removal in summary.pruned:
            progress(f"pruned {removal.describe()}: its folder is gone from {data_root}")
    sequences = scan.sequences
    if only:
        for key in only:
            validate_sequence_key(key)
        missing = sorted(set(only) - {s.key for s in sequences})
        if missing:
            raise FileNotFoundError(f"no sequence folder for {', '.join(missing)} under {data_root}")
        sequences = [s for s in sequences if s.key in set(only)]
    keys = [s.key for s in sequences]
    added = register_sequences(instance, keys)
    progress(f"{len(keys)} sequences under {data_root} ({len(added)} newly registered)")
    ingest_folders(instance, resources, data_root, sequences, summary, progress, workers, run_config, force)
    return summary


def ingest_folders(
    instance: DagsterInstance,
    resources: dict,
    data_root: Path,
    sequences: list[SequenceFolder],
    summary: IngestSummary,
    progress: Callable[[str], None],
    workers: int,
    run_config: dict,
    force: bool = False,
    tags: dict[str, str] | None = None,
) -> None:
    """Run `ingest_sequence` for the registered `sequences` that are not current, `workers` at a time,
    recording each outcome in `summary` and reporting a line per sequence, then the failure table and
    the counts. Shared by `facetalk ingest` and the daemon's batch job (`pipelines.ingest_batch`);
    `run_config` is the checked per-sequence config (`ingest_run_config`); `tags` go on every run."""
    keys = [s.key for s in sequences]
    current = set() if force else unchanged_sequences(instance, resources, sequences, run_config)
    done = 0

    def report(outcome: SequenceOutcome) -> None:
        nonlocal done
        done += 1
        summary.outcomes.append(outcome)
        if outcome.status == "failed":
            summary.failed[outcome.key] = [f"{f.asset}: {f.reason}" for f in outcome.failures]
        else:
            summary.succeeded.append(outcome.key)
            if outcome.status == "unchanged":
                summary.unchanged.append(outcome.key)
        progress(f"[{done}/{len(keys)}] {outcome.line()}")

    for key in keys:
        if key in current:
            report(SequenceOutcome(key, "unchanged"))
    todo = [key for key in keys if key not in current]
    ingest_partitions(instance, resources, todo, run_config, data_root, workers, report, tags)
    summary.succeeded.sort()
    for line in summary_lines(summary):
        progress(line)


def summary_lines(summary: IngestSummary) -> list[str]:
    """The failure table (sequence, asset, file, reason) and the counts."""
    lines = []
    if table := failure_table(summary.outcomes):
        lines += ["", f"failures ({len(summary.failed)} sequences):", *(f"  {row}" for row in table), ""]
    counts = {status: sum(o.status == status for o in summary.outcomes) for status in ("ok", "unchanged", "failed")}
    lines.append(
        f"{len(summary.outcomes)} sequences: {counts['ok']} ok, {counts['unchanged']} unchanged, "
        f"{counts['failed']} failed; {len(summary.rejected)} folders skipped"
        + (f"; {len(summary.pruned)} pruned" if summary.pruned else "")
    )
    return lines


def ingest_run_config(run_config: dict | None, verbose: bool = False) -> dict:
    """The per-sequence run config (configs/ingest_sequence.yaml), checked against the job before any run.

    The console stays quiet unless `verbose` (or FACETALK_LOG_LEVEL): the CLI prints one line per
    sequence and a failure table; every event, tracebacks included, is in the instance for the UI."""
    from dagster import DagsterInvalidConfigError, validate_run_config

    from pipelines.definitions import defs

    level = os.environ.get("FACETALK_LOG_LEVEL") or ("INFO" if verbose else "CRITICAL")
    config = {"loggers": {"console": {"config": {"log_level": level}}}, **(run_config or {})}
    try:
        validate_run_config(defs.resolve_job_def(JOB_NAME), config)
    except DagsterInvalidConfigError as error:
        problems = "; ".join(e.message for e in error.errors) or str(error)
        raise ValueError(f"not a valid {JOB_NAME} run config (see configs/ingest_sequence.yaml): {problems}") from None
    return config


def unchanged_sequences(
    instance: DagsterInstance, resources: dict, sequences: list[SequenceFolder], run_config: dict
) -> set[str]:
    """Keys whose stored components are current (file stats only) and whose partition this instance
    has materialized, so that the UI agrees: no run is needed for them."""
    from pipelines.assets.ingestion import AudioFeaturesConfig, NphmMeshesConfig, assets_for

    materialized = {a.key: instance.get_materialized_partitions(a.key) for a in per_sequence_assets}
    # Assets of absent optional inputs are never materialized: only those a run would select count.
    candidates = [s for s in sequences if all(s.key in materialized[key] for key in assets_for(s))]
    if not candidates:
        return set()
    feature_config = run_config.get("ops", {}).get("audio_features", {}).get("config", {})
    features = FeatureSettings(
        fps=resources["dataset"].fps,
        max_drift_s=float(feature_config.get("max_drift_s", AudioFeaturesConfig().max_drift_s)),
    )
    mesh_config = run_config.get("ops", {}).get("nphm_meshes", {}).get("config", {})
    mesh_mode = mesh_config.get("mode", NphmMeshesConfig().mode)
    store, encoder = resources["store"].sequences(), resources["audio_encoder"].source()
    return {s.key for s in candidates if is_sequence_current(s, store, encoder, features, mesh_mode)}


def materialize_segments(
    instance: DagsterInstance, resources: dict, run_config: dict | None = None
) -> ExecuteInProcessResult:
    """One run of the `build_training_segments` job."""
    return run_job("build_training_segments", instance, resources, run_config)


def materialize_retrain(
    instance: DagsterInstance, resources: dict, run_config: dict | None = None
) -> ExecuteInProcessResult:
    """One run of the `retrain` job: training_segments -> both models -> evaluation."""
    return run_job("retrain", instance, resources, run_config)


def run_job(
    name: str, instance: DagsterInstance, resources: dict, run_config: dict | None = None
) -> ExecuteInProcessResult:
    """One run of the Definitions' job `name` in this process, through the instance, so the UI lists it
    under the job's name (not `__ephemeral_asset_job__`); tagged with this process for orphan cleanup.

    The console shows INFO and up (`FACETALK_LOG_LEVEL`); every event is still in the instance.
    """
    level = os.environ.get("FACETALK_LOG_LEVEL", "INFO")
    run_config = {"loggers": {"console": {"config": {"log_level": level}}}, **(run_config or {})}
    return job_with_resources(name, resources).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False, tags=cli_tags()
    )


def job_with_resources(name: str, resources: dict):
    """The Definitions' job `name` bound to these resources (the CLI's roots), ready to execute.

    Bound at definition time, not passed to `execute_in_process`: Dagster refuses resources given
    there together with an `asset_selection` (they would conflict with the assets' own)."""
    from dagster import Definitions

    from pipelines.definitions import all_assets, defs
    from pipelines.training_launch import training_launcher_from_env

    jobs = [job for job in defs.jobs or [] if job.name == name]
    # Definitions checks every asset's resources, also those the job leaves out: a caller that
    # only ingests need not name the model assets' launcher (the deployment's default is used).
    resources = {"training_launcher": training_launcher_from_env(), **resources}
    return Definitions(assets=all_assets, jobs=jobs, resources=resources).resolve_job_def(name)
