"""What one ingestion run did, in words for people: a line per sequence, a table of failures."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterEventType, ExecuteInProcessResult


@dataclass(frozen=True)
class Failure:
    asset: str
    file: str  # the file the error names (relative to the data root when below it), or ""
    reason: str  # the error's message, one line


@dataclass
class SequenceOutcome:
    """One sequence's result; plain data, so it crosses from a worker process."""

    key: str
    status: str  # "ok" | "unchanged" | "failed"
    detail: str = ""  # per-asset statuses, e.g. "cleaned_audio materialized, nphm_meshes cached"
    failures: list[Failure] = field(default_factory=list)
    run_id: str | None = None

    def line(self) -> str:
        if self.status == "failed":
            first = self.failures[0] if self.failures else Failure("?", "", "unknown error")
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return f"{self.key}: FAILED {first.asset}: {first.reason}{more}"
        return f"{self.key}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def outcome_of(key: str, result: ExecuteInProcessResult, data_root: Path) -> SequenceOutcome:
    if result.success:
        return SequenceOutcome(key, "ok", _statuses(result), run_id=result.run_id)
    failures = [Failure(asset, file_named(reason, data_root), reason) for asset, reason in step_failures(result)]
    return SequenceOutcome(key, "failed", failures=failures, run_id=result.run_id)


def step_failures(result: ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(step, message) for each failed step: the first error below Dagster's own wrappers (ours).

    After retries the failure only says "Exceeded max_retries"; the reason is on the last retry event.
    """
    retried = {
        event.step_key: event.event_specific_data.error
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY and event.event_specific_data.error is not None
    }
    failures = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None and error.message.startswith("Exceeded max_retries") and event.step_key in retried:
            error = retried[event.step_key]
        while error is not None and error.cause is not None and _is_dagster_wrapper(error.cls_name or ""):
            error = error.cause
        text = (error.message if error is not None else "unknown error").strip()
        failures.append((event.step_key, text.splitlines()[-1] if text else text))
    return failures


def _is_dagster_wrapper(cls_name: str) -> bool:
    # `Failure`: what a per-sequence asset raises from the real error (pipelines/partition_failure.py).
    return cls_name.startswith(("Dagster", "RetryRequested")) or cls_name == "Failure"


_PATH = re.compile(r"(/[^\s:'\",;()]+)")


def file_named(message: str, data_root: Path) -> str:
    """The first absolute path in an error message, relative to the data root when below it."""
    root = str(Path(data_root))
    for match in _PATH.finditer(message):
        path = match.group(1).rstrip(".")
        if path == root or path.startswith(root + "/"):
            return path[len(root) :].lstrip("/") or path
    match = _PATH.search(message)
    return match.group(1).rstrip(".") if match else ""


def _statuses(result: ExecuteInProcessResult) -> str:
    parts = []
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        status = materialization.metadata.get("status")
        parts.append(f"{materialization.asset_key.to_user_string()} {status.value if status else ''}".strip())
    return ", ".join(parts)


def failure_table(outcomes: list[SequenceOutcome]) -> list[str]:
    """Aligned rows: sequence, asset, file, reason (one per failed asset)."""
    rows = [(o.key, f.asset, f.file or "-", f.reason) for o in outcomes if o.status == "failed" for f in o.failures]
    if not rows:
        return []
    header = ("sequence", "asset", "file", "reason")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in [header, *rows]
    ]


def outcome_markdown(outcomes: list[SequenceOutcome], skipped: list[tuple[str, str]] = ()) -> str:
    """A Markdown table for the UI: one row per sequence (or per failed asset), `skipped` (key, why) last."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| sequence | status | asset | file | reason / detail | run |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        run = f"`{o.run_id[:8]}`" if o.run_id else ""
        if o.status == "failed":
            for f in o.failures or [Failure("?", "", "unknown error")]:
                rows.append(f"| {o.key} | **failed** | {f.asset} | {cell(f.file) or '-'} | {cell(f.reason)} | {run} |")
        else:
            rows.append(f"| {o.key} | {o.status} | | | {cell(o.detail)} | {run} |")
    rows += [f"| {key} | skipped | | | {cell(why)} | |" for key, why in skipped]
    return "\n".join(rows)
