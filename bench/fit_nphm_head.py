"""Fit an NPHM-size network (default NPHMConfig) to the analytic demo head: a realistic NPHM for benchmarks.

    python -m bench.fit_nphm_head [--out var/fitted_nphm] [--neutral-steps N] [--expression-steps N]

Writes OUT/nphm.pt (save_nphm's one-file layout; `load_nphm(OUT)` or `load_nphm(OUT/nphm.pt)`
reads it) and OUT/fit_report.json (losses, held-out SDF errors, seconds), published together
(a killed run leaves the previous folder or none). See ops/geometry/fitted_head.py for the method.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch

from models.heads.analytic import AnalyticHead
from models.heads.nphm import CHECKPOINT_FILE, load_nphm, save_nphm
from ops.geometry.fitted_head import FitSettings, fit_nphm
from storage.atomic import atomic_directory

DEFAULT_OUT = Path("var/fitted_nphm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    defaults = FitSettings()
    for field in fields(FitSettings):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name))
    parser.add_argument("--start", type=Path, default=None, help="continue from this fitted head's ensemble")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: small per-member products; a busy box)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = FitSettings(**{f.name: getattr(args, f.name) for f in fields(FitSettings)})
    if settings.neutral_steps < (0 if args.start else 1) or settings.expression_steps < 0:
        parser.error("--neutral-steps must be >= 1 (>= 0 with --start), --expression-steps >= 0")
    if settings.pool_expressions < 2:
        parser.error("--pool-expressions must be >= 2")
    start = load_nphm(args.start) if args.start else None
    model, report = fit_nphm(AnalyticHead(), settings, start=start)
    with atomic_directory(args.out) as tmp:
        save_nphm(model, Path(tmp) / CHECKPOINT_FILE)
        (Path(tmp) / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / CHECKPOINT_FILE} ({report['seconds']:.0f} s)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
