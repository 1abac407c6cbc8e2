"""The metrics table as Markdown for the asset page: one table per model family, what the columns
mean, and every comparison an audio-free baseline wins (so the table never looks better than it is)."""

from __future__ import annotations

Table = dict[str, dict[str, float]]

ROW_ORDER = ("model", "null_condition", "mean_code", "mean_offsets", "zero_code", "zero_offsets", "ground_truth")
METRIC_NOTES = {
    "lip_sync": "generated vs ground-truth mouth opening, Pearson r at the best offset (ground truth = 1, the ceiling)",
    "lip_sync_offset": "that offset in frames (+: the generated mouth lags)",
    "audio_energy_sync": "secondary proxy: mouth opening vs audio RMS (rewards following loudness)",
    "fdd": "signed, per sequence then averaged; fdd_abs: mean of |fdd|",
}


def metrics_markdown(tables: dict[str, Table], wins: dict[str, list[str]] | None = None) -> str:
    """One Markdown table per model family (rows = model and baselines, columns = metrics), the
    protocol in a line, and every metric on which an audio-free baseline wins."""
    lines = []
    for family, table in tables.items():
        rows = sorted(
            (name for name in table if name != "data"),
            key=lambda n: (n not in ROW_ORDER, ROW_ORDER.index(n) if n in ROW_ORDER else 0, n),
        )
        metrics = sorted({metric for name in rows for metric in table[name]})
        data = table.get("data", {})
        lines += [
            f"**{family}**: {int(data.get('n_sequences', 0))} whole test sequences, {int(data.get('n_frames', 0))} frames, "
            f"the same for every row",
            "",
            "| | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for name in rows:
            row = table[name]
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4g}" if m in row else "" for m in metrics) + " |")
        lines.append("")
        lines += [f"- {metric}: {text}" for metric, text in METRIC_NOTES.items() if metric in metrics]
        family_wins = (wins or {}).get(family, [])
        if family_wins:
            lines += ["", f"**An audio-free baseline wins on {len(family_wins)} comparison(s):**"]
            lines += [f"- {win.removeprefix(family + ': ')}" for win in family_wins]
        else:
            lines += ["", "The model beats every audio-free baseline on every comparable metric."]
        lines.append("")
    return "\n".join(lines)
