"""Small figures for asset metadata (rendered headless with matplotlib's Agg backend)."""

from __future__ import annotations

import base64
from pathlib import Path


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
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def png_markdown(path: Path, alt: str) -> str:
    """Markdown with the PNG inlined, so the Dagster UI shows it without serving files."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"
