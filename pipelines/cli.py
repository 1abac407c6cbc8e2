"""`facetalk`: the command line. Heavy imports happen inside each command, so `--help` is instant."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _demo_data(args: argparse.Namespace) -> int:
    from ops.demo_data import DemoDataConfig, generate_demo_dataset

    config = DemoDataConfig(
        n_identities=args.identities, n_sequences=args.sequences, seconds=args.seconds, seed=args.seed,
        nphm_mesh_resolution=args.mesh_resolution,
    )
    summary = generate_demo_dataset(Path(args.path), config, progress=print, workers=_workers())
    print(f"demo dataset written to {args.path}: {summary}")
    return 0


def _workers() -> int:
    import os

    return max(1, min(4, os.cpu_count() or 1))


def _resources(args: argparse.Namespace) -> dict:
    import os

    if getattr(args, "data_root", None):
        os.environ["FACETALK_DATA_ROOT"] = str(args.data_root)
    if getattr(args, "store", None):
        os.environ["FACETALK_STORE"] = str(args.store)
    from pipelines.resources import default_resources

    return default_resources()


def _instance():
    from dagster import DagsterInstance

    from pipelines.settings import ensure_dagster_home

    home = ensure_dagster_home()
    print(f"Dagster instance: {home} (open the UI with `make ui` to see these runs)")
    return DagsterInstance.get()


def _ingest(args: argparse.Namespace) -> int:
    resources = _resources(args)
    from pipelines.runner import ingest_sequences

    data_root = resources["dataset"].path
    summary = ingest_sequences(_instance(), resources, data_root, only=args.sequence or None)
    return 1 if summary.failed else 0


def _segments(args: argparse.Namespace) -> int:
    resources = _resources(args)
    from pipelines.runner import failure_messages, materialize_segments

    result = materialize_segments(_instance(), resources, _load_run_config(args.config))
    if not result.success:
        for line in failure_messages(result):
            print(f"FAILED {line}", file=sys.stderr)
        return 1
    _print_materializations(result)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The main job on the demo data: generate it if absent, ingest, build training segments."""
    started = time.time()
    resources = _resources(args)
    data_root = resources["dataset"].path
    if not data_root.is_dir() or not any(data_root.iterdir()):
        from ops.demo_data import DemoDataConfig, generate_demo_dataset

        print(f"generating the demo dataset in {data_root} ...")
        generate_demo_dataset(data_root, DemoDataConfig(), progress=print, workers=_workers())
    instance = _instance()
    from pipelines.runner import failure_messages, ingest_sequences, materialize_segments

    summary = ingest_sequences(instance, resources, data_root)
    if not summary.succeeded:
        print("no sequence could be ingested; see the errors above", file=sys.stderr)
        return 1
    result = materialize_segments(instance, resources)
    if not result.success:
        for line in failure_messages(result):
            print(f"FAILED {line}", file=sys.stderr)
        return 1
    _print_materializations(result)
    print(f"demo finished in {time.time() - started:.0f} s")
    return 1 if summary.failed else 0


def _load_run_config(path: str | None) -> dict | None:
    if not path:
        return None
    import yaml

    return yaml.safe_load(Path(path).read_text())


def _print_materializations(result) -> None:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        print(f"materialized {materialization.asset_key.to_user_string()}:")
        for key, value in materialization.metadata.items():
            print(f"    {key}: {getattr(value, 'value', value)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facetalk", description="FaceTalk pipeline commands.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo_data = commands.add_parser("demo-data", help="write the deterministic demo dataset to PATH")
    demo_data.add_argument("path")
    demo_data.add_argument("--identities", type=int, default=4)
    demo_data.add_argument("--sequences", type=int, default=4, help="sequences per identity")
    demo_data.add_argument("--seconds", type=float, default=4.0)
    demo_data.add_argument("--mesh-resolution", type=int, default=48, help="NPHM-like mesh grid (0: no meshes)")
    demo_data.add_argument("--seed", type=int, default=0)
    demo_data.set_defaults(run=_demo_data)

    for name, run, text in (
        ("ingest", _ingest, "register every sequence folder and materialize its per-sequence assets"),
        ("segments", _segments, "materialize training_segments"),
        ("demo", _demo, "run the main job on the demo data (generated if absent)"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--data-root", help="dataset root (default: $FACETALK_DATA_ROOT or the demo data)")
        command.add_argument("--store", help="store root (default: $FACETALK_STORE)")
        command.set_defaults(run=run)
        if name == "ingest":
            command.add_argument("--sequence", action="append", help="only this sequence key (repeatable)")
        if name == "segments":
            command.add_argument("-c", "--config", help="run config YAML, e.g. configs/training_segments.yaml")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"facetalk {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
