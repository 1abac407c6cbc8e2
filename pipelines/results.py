"""Turn framework-free outcomes from ops/ into Dagster results."""

from __future__ import annotations

import warnings

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    PreviewWarning,
)

from ops.tracking.ingest import IngestOutcome
from ops.tracking.validation import CheckOutcome
from pipelines.check_descriptions import describe_check


def check_specs(
    asset: str, names: list[str], blocking: bool = False, partitions_def: PartitionsDefinition | None = None
) -> list[AssetCheckSpec]:
    """The specs of `asset`'s checks, each with its description (pipelines/check_descriptions.py).

    With the asset's `partitions_def`, each evaluation is kept per partition, so the UI sums up a
    check over all sequences (passed / failed partitions) instead of showing the latest one only.
    Dagster 1.13 flags partitioned checks as a preview; the warning is silenced here, once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            AssetCheckSpec(
                name, asset=asset, blocking=blocking, description=describe_check(name), partitions_def=partitions_def
            )
            for name in names
        ]


def to_check_result(check: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=check.name,
        passed=check.passed,
        severity=AssetCheckSeverity.WARN if check.severity == "WARN" else AssetCheckSeverity.ERROR,
        description=check.description,
        metadata=check.metadata,
    )


def to_metadata(values: dict) -> dict:
    """Paths become path metadata; lists and dicts become JSON, so the UI shows them well."""
    metadata = {}
    for key, value in values.items():
        if key.endswith(("path", "_file", "_dir")) and isinstance(value, str):
            metadata[key] = MetadataValue.path(value)
        elif isinstance(value, (list, dict)):
            metadata[key] = MetadataValue.json(value)
        else:
            metadata[key] = value
    return metadata


def ingest_result(outcome: IngestOutcome, declared_checks: list[str]) -> MaterializeResult:
    """Metadata says `status: cached` when the store already matched; every declared check reports."""
    metadata = {"status": outcome.status, **to_metadata(outcome.metadata)}
    if outcome.path is not None:
        metadata["store_path"] = MetadataValue.path(str(outcome.path))
    reported = {c.name: c for c in outcome.checks}
    results = []
    for name in declared_checks:
        check = reported.get(name) or CheckOutcome(name, True, description=f"not applicable ({outcome.status})")
        results.append(to_check_result(check))
    return MaterializeResult(metadata=metadata, check_results=results)
