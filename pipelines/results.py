"""Turn framework-free outcomes from ops/ into Dagster results."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MaterializeResult, MetadataValue

from ops.tracking.ingest import IngestOutcome
from ops.tracking.validation import CheckOutcome


def check_specs(asset: str, names: list[str], blocking: bool = False) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=asset, blocking=blocking) for name in names]


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
