"""Small figures for asset metadata (rendered headless with matplotlib's Agg backend)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np


def loss_curve_png(history: dict[str, list[list[float]]], path: Path, title: str = "loss") -> Path:
    """Plot {"train": [[step, loss], ...], "val": [...]} on a log scale into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=100)
    for name, points in sorted(history.items()):
        if points:
            steps, losses = zip(*points)
            axes.plot(steps, losses, label=name, marker="o" if name == "val" else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def png_markdown(path: Path, alt: str) -> str:
    """Markdown with the PNG inlined, so the Dagster UI shows it without serving files."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def mouth_opening_png(tracks: dict, path: Path, title: str, fps: float) -> Path:
    """Mouth opening over time of the ground truth, the model and the null condition (left axis), and
    the audio's RMS envelope (right axis, shaded) when `tracks` has "audio_envelope"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 2.8), dpi=90)
    styles = {"ground_truth": ("black", 2.0), "model": ("tab:blue", 1.5), "null_condition": ("tab:red", 1.0)}
    n = 0
    for row, (color, width) in styles.items():
        if row in tracks:
            n = len(tracks[row])
            axes.plot(np.arange(n) / fps, tracks[row], color=color, linewidth=width, label=row)
    axes.set_xlabel("seconds")
    axes.set_ylabel("mouth opening")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if "audio_envelope" in tracks:
        envelope = axes.twinx()
        t = np.arange(len(tracks["audio_envelope"])) / fps
        envelope.fill_between(t, tracks["audio_envelope"], color="tab:gray", alpha=0.25, label="audio RMS")
        envelope.set_ylabel("audio RMS")
        envelope.set_ylim(bottom=0)
    axes.legend(loc="upper left", fontsize=7)
    return _save(figure, path)


INLINE_MARKDOWN_LIMIT = 1000  # the Dagster UI shows Markdown metadata shorter than this inline, longer behind a link


def loss_curve_svg_markdown(history: dict[str, list[list[float]]], alt: str = "loss", limit: int = 990) -> str:
    """The loss curve as a Markdown image short enough for the Dagster UI to show inline.

    The asset page renders a Markdown metadata value in place only under ~1000 characters (a PNG
    is far larger and hides behind "[Show Markdown]"), so this is a bare SVG sparkline on a log
    scale: train in blue, validation in orange, first and last train loss as text. Points are
    thinned until it fits.
    """
    series = {name: np.asarray(points, np.float64) for name, points in history.items() if len(points)}
    if not series:
        return "(no losses recorded)"
    for n_points in (60, 40, 28, 20, 14, 10, 6, 3):
        markdown = _sparkline(series, n_points, alt)
        if len(markdown) <= limit:
            return markdown
    return markdown


def _sparkline(series: dict[str, np.ndarray], n_points: int, alt: str) -> str:
    width, height = 240, 80
    steps = np.concatenate([s[:, 0] for s in series.values()])
    logs = np.log10(np.maximum(np.concatenate([s[:, 1] for s in series.values()]), 1e-12))
    x0, x1 = float(steps.min()), float(max(steps.max(), steps.min() + 1))
    y0, y1 = float(logs.min()), float(max(logs.max(), logs.min() + 1e-6))
    lines = []
    for name, points in sorted(series.items()):
        keep = np.unique(np.linspace(0, len(points) - 1, min(n_points, len(points))).round().astype(int))
        xs = (points[keep, 0] - x0) / (x1 - x0) * (width - 4) + 2
        ys = height - 14 - (np.log10(np.maximum(points[keep, 1], 1e-12)) - y0) / (y1 - y0) * (height - 18)
        coordinates = " ".join(f"{x:.0f},{y:.0f}" for x, y in zip(xs, ys))
        color = "#f80" if name == "val" else "#26b"
        lines.append(f"<polyline points='{coordinates}' fill='none' stroke='{color}'/>")
    train = series.get("train", next(iter(series.values())))
    label = f"train (blue) {train[0, 1]:.3g} to {train[-1, 1]:.3g}, val orange, log y"
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>{''.join(lines)}"
        f"<text x='2' y='{height - 2}' font-size='10'>{label}</text></svg>"
    )
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


def _save(figure, path: str | Path) -> Path:
    """Write the figure as a PNG at `path` (folders created) and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
