"""What the CLI prints after a run: short metadata lines, the demo's summary, the demo data in words.

Materialization metadata is written for the UI (Markdown tables, PNGs inlined as base64, long JSON);
a terminal gets a line per entry, images left to the UI and long values cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_VALUE_CHARS = 160
IMAGE_MARK = "data:image/"


def short_value(value: Any) -> str:
    """One line: images named, not printed; JSON compact; anything longer than MAX_VALUE_CHARS cut."""
    raw = getattr(value, "value", value)
    if isinstance(raw, (list, dict)):
        text = json.dumps(raw, default=str)
    else:
        text = str(raw)
    if IMAGE_MARK in text:
        return "(image: open the asset in the UI)"
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def materialization_lines(result) -> list[str]:
    """`materialized <asset>:` and an indented `key: value` line per metadata entry."""
    lines = []
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        lines.append(f"materialized {materialization.asset_key.to_user_string()}:")
        lines += [f"    {key}: {short_value(value)}" for key, value in materialization.metadata.items()]
    return lines


def metadata_value(result, asset: str, key: str) -> Any:
    """The value of metadata `key` of `asset`'s materialization in `result`, or None."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset and key in materialization.metadata:
            return materialization.metadata[key].value
    return None


def metrics_lines(markdown: str) -> list[str]:
    """The evaluation's Markdown tables as aligned plain-text columns."""
    lines: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            lines.extend(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
            )
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):  # the |---| separator row
                table.append(cells)
        else:
            flush()
            # Headings only: the bullet lists (metric legends, baseline wins) are for the asset page;
            # `facetalk demo` prints the wins once, beside the quality gate.
            if line.strip() and not line.lstrip().startswith("-"):
                text = line.strip().replace("**", "")
                lines.append(text if text.endswith(":") else text + ":")
    flush()
    return lines


def demo_summary(result, seconds: float, ui: str) -> list[str]:
    """The end of `facetalk demo`: the metrics table, the MP4s, how to open the UI."""
    lines = ["", f"demo finished in {seconds:.0f} s"]
    checkpoint = metadata_value(result, "facetalk_model", "checkpoint")
    if checkpoint:
        lines.append(f"motion model: {checkpoint}")
    if metrics := metadata_value(result, "evaluation_metrics", "metrics"):
        lines += ["evaluation on the test identities (model vs audio-free baselines):", *metrics_lines(metrics)]
    videos = metadata_value(result, "evaluation_renders", "videos") or []
    lines += [f"talking head: {video}" for video in videos]
    lines.append(f"see every run, asset and check in the Dagster UI: {ui}")
    return lines


def demo_data_lines(summary) -> list[str]:
    """`facetalk demo-data`'s report in words (ops.demo.dataset.DemoDatasetSummary)."""
    root = Path(summary.root)
    return [
        f"wrote the demo dataset to {root} in {summary.seconds:.1f} s:",
        f"  {summary.n_sequences} sequences of {summary.n_identities} identities, {summary.n_frames} frames in all "
        f"(folders {', '.join(p.name for p in summary.sequence_dirs[:3])}{', ...' if len(summary.sequence_dirs) > 3 else ''})",
        f"  speech: {summary.speech}",
        f"  face regions: {summary.regions_path}",
        f"  held-out audio for `facetalk animate`: {', '.join(str(p) for p in summary.unseen_audio) or 'none'}",
        f"next: facetalk ingest --data-root {root}",
    ]
