"""`facetalk`: the command line. Heavy imports happen inside each command, so `--help` is instant."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pipelines.cli_errors import error_line, traceback_text
from pipelines.cli_help import DefaultsHelpFormatter, package_version, ui_hint
from pipelines.cli_output import demo_data_lines, demo_summary, materialization_lines, metadata_value

MOUTH_CENTRE = (0.0, -0.106, 0.245)  # = ops.geometry.facial_smoothing.MOUTH_CENTRE (not imported: --help stays instant)
QUALITY_GATE = "model_beats_audio_free_baseline"  # the evaluation's blocking check (pipelines/assets/evaluation.py)


def _demo_data(args: argparse.Namespace) -> int:
    from ops.demo.dataset import DemoDataConfig, generate_demo_dataset

    config = DemoDataConfig(
        n_identities=args.identities,
        n_sequences=args.sequences,
        seconds=args.seconds,
        seed=args.seed,
        nphm_mesh_resolution=args.mesh_resolution,
        speech=args.speech,
    )
    summary = generate_demo_dataset(Path(args.path), config, progress=print, workers=_workers())
    for line in demo_data_lines(summary):
        print(line)
    return 0


def _demo_encoder(args: argparse.Namespace) -> int:
    from ops.demo.encoder_training import DemoEncoderConfig, train_demo_encoder
    from pipelines import settings

    config = DemoEncoderConfig(steps=args.steps, seed=args.seed)
    train_demo_encoder(Path(args.path) if args.path else settings.default_encoder_path(), config, progress=print)
    return 0


def _ensure_demo_encoder(args: argparse.Namespace, encoder_path: Path) -> None:
    """`facetalk demo` without an encoder of the user's: the demo encoder, trained once (a random one,
    e.g. left by an earlier version or made by a UI run, is replaced; so are its cached features)."""
    import json

    from pipelines import settings

    if args.encoder or os.environ.get(settings.ENCODER_ENV) or encoder_path != settings.default_encoder_path():
        return
    from models.audio_encoder import RANDOM_INIT_MARKER

    config_file = encoder_path / "config.json"
    if config_file.is_file() and not json.loads(config_file.read_text()).get(RANDOM_INIT_MARKER, False):
        return
    from ops.demo.espeak import espeak_available

    if not espeak_available():
        print(
            "espeak-ng is missing: the demo uses a randomly initialised audio encoder (its features carry no phonetics)"
        )
        return
    from ops.demo.encoder_training import train_demo_encoder

    print(f"training the demo audio encoder in {encoder_path} (once; a stand-in for real Wav2Vec2 weights) ...")
    train_demo_encoder(encoder_path, progress=print)


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _resources(args: argparse.Namespace) -> dict:
    from pipelines.resources import default_resources

    return default_resources(
        data_root=getattr(args, "data_root", None),
        store=getattr(args, "store", None),
        audio_encoder=getattr(args, "encoder", None),
        fps=getattr(args, "fps", None),
    )


def _instance():
    from dagster import DagsterInstance

    from pipelines import sqlite_events
    from pipelines.runner import fail_orphaned_runs
    from pipelines.settings import ensure_dagster_home

    sqlite_events.install()  # a SQLite instance's per-event commits without fsyncs (see the module)
    home = ensure_dagster_home()
    print(f"Dagster instance: {home} (see these runs in the UI: {ui_hint(home)})")
    instance = DagsterInstance.get()
    for run_id in fail_orphaned_runs(instance):
        print(f"marked run {run_id} failed: the process that ran it was killed")
    return instance


def _ingest(args: argparse.Namespace) -> int:
    from pipelines.settings import random_encoder_refusal

    resources = _resources(args)
    data_root = resources["dataset"].path
    if not args.allow_random_encoder and (refusal := random_encoder_refusal(data_root, args.encoder)):
        print(f"facetalk ingest: error: {refusal}", file=sys.stderr)
        return 2
    from pipelines.runner import ingest_run_config, ingest_sequences

    run_config = _load_run_config(args.config)
    try:
        ingest_run_config(run_config)
    except ValueError as error:
        raise ValueError(f"-c {args.config}: {error}") from None
    summary = ingest_sequences(
        _instance(), resources, data_root, only=args.sequence or None, workers=args.workers,
        run_config=run_config, force=args.force, prune=args.prune, verbose=args.verbose,
    )  # fmt: skip
    return 1 if summary.failed else 0


def _remove(args: argparse.Namespace) -> int:
    resources = _resources(args)
    from pipelines.lifecycle import UnknownSequence, remove_sequence

    instance = _instance()
    store = resources["store"].sequences()
    status = 0
    for key in args.keys:
        try:
            removal = remove_sequence(instance, store, key)
        except UnknownSequence as error:
            print(f"facetalk remove: error: {error}", file=sys.stderr)
            status = 2
            continue
        print(f"removed {removal.describe()}")
        if (resources["dataset"].path / key).is_dir():
            print(
                f"note: the folder {resources['dataset'].path / key} still exists; the next `facetalk ingest` "
                "(or the sensor) adds it back. Delete or move the folder to keep it out."
            )
    return status


def _segments(args: argparse.Namespace) -> int:
    resources = _resources(args)
    from pipelines.runner import failure_messages, materialize_segments, require_writable_store

    require_writable_store(resources["store"].path)
    result = materialize_segments(_instance(), resources, _load_run_config(args.config))
    if not result.success:
        for line in failure_messages(result):
            print(f"facetalk {args.command}: error: {line}", file=sys.stderr)
        return 1
    for line in materialization_lines(result):
        print(line)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The main job on the demo data: generate it if absent, ingest, segment, train, evaluate, render."""
    started = time.time()
    resources = _resources(args)
    run_config = _load_run_config(args.config)  # a bad file fails now, not after ingestion
    data_root = resources["dataset"].path
    if not data_root.is_dir() or not any(data_root.iterdir()):
        from ops.demo.dataset import DemoDataConfig, generate_demo_dataset

        print(f"generating the demo dataset in {data_root} ...")
        generate_demo_dataset(data_root, DemoDataConfig(), progress=print, workers=_workers())
    _ensure_demo_encoder(args, Path(resources["audio_encoder"].path))
    instance = _instance()
    from pipelines import settings
    from pipelines.runner import failure_messages, ingest_sequences, materialize_retrain

    summary = ingest_sequences(instance, resources, data_root, workers=args.workers, verbose=args.verbose)
    if not summary.succeeded:
        print("facetalk demo: error: no sequence could be ingested; see the failures above", file=sys.stderr)
        return 1
    print("training segments -> facetalk_model + flame_model -> evaluation_metrics + evaluation_renders ...")
    result = materialize_retrain(instance, resources, run_config)
    _print_quality_gate(result)
    # The summary also after a failed step: what was made (metrics, videos) is still worth showing.
    for line in demo_summary(result, time.time() - started, ui_hint(settings.dagster_home())):
        print(line)
    if not result.success:
        failures = failure_messages(result)
        lost = [n for n in metadata_value(result, "evaluation_metrics", "notes") or [] if "LOSES to" in n]
        if lost:
            print("where an audio-free baseline beats the model:", file=sys.stderr)
            for note in lost:
                print(f"    {note}", file=sys.stderr)
        if _only_the_quality_gate_failed(result, failures):
            # The demo ran end to end; its tiny model not beating every baseline is a finding, not a crash.
            print(
                "facetalk demo: the pipeline ran end to end, but the quality gate FAILED (above): "
                "the demo model does not beat every audio-free baseline",
                file=sys.stderr,
            )
            return 1 if summary.failed else 0
        for line in failures:
            print(f"facetalk {args.command}: error: {line}", file=sys.stderr)
        return 1
    return 1 if summary.failed else 0


def _only_the_quality_gate_failed(result, failures: list[str]) -> bool:
    gate_failed = any(not e.passed for e in result.get_asset_check_evaluations() if e.check_name == QUALITY_GATE)
    return gate_failed and all(line.startswith("evaluation_metrics") for line in failures)


def _animate(args: argparse.Namespace) -> int:
    from pipelines import settings
    from storage.location import is_remote, store_path
    from storage.transfer import local_copy

    checkpoint = (
        store_path(args.checkpoint)
        if args.checkpoint
        else settings.store_root() / "checkpoints" / "facetalk_model" / "model.ckpt"
    )
    if "://" in str(args.out) and not str(args.out).startswith("file://"):
        raise ValueError(f"--out must be a local path (ffmpeg writes it), got {args.out!r}")
    from ops.inference import resolve_device

    resolve_device(args.device)  # `--device cuda` without a GPU: the one-line error now, before any download
    if (is_remote(checkpoint) or not args.checkpoint) and not checkpoint.is_file():
        raise FileNotFoundError(
            f"no trained model at {checkpoint}: pass one with -m/--checkpoint, or train one with `facetalk demo`"
        )
    if is_remote(checkpoint):
        print(f"downloading {checkpoint} ...")
    with local_copy(checkpoint) as local_checkpoint:
        return _animate_with(args, local_checkpoint, settings)


def _animate_with(args: argparse.Namespace, checkpoint: Path, settings) -> int:
    from ops.animate import animate_audio
    from ops.progress import format_seconds

    identity = _identity(args.identity) if args.identity else None
    Path(args.out).expanduser().parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = animate_audio(
        args.audio, checkpoint, args.out,
        encoder_path=args.encoder or settings.audio_encoder_path(),
        identity_code=identity, identity_source=args.identity, head=args.head, nphm_checkpoint=args.nphm_checkpoint,
        flame_template=args.flame_template, resolution=args.resolution, steps=args.steps,
        guidance=args.guidance, seed=args.seed, device=args.device, video_size=args.size,
        write_meshes=args.meshes, write_codes=not args.no_codes, max_duration_s=args.max_seconds,
        audio_track=args.audio_track, progress=print, facial_smoothing=_facial_smoothing(args),
        cpu_threads=args.cpu_threads or None,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    video_s = result.n_frames / result.fps
    print(
        f"done: {result.video} holds {video_s:.2f} s of video ({result.n_frames} frames at {result.fps:g} fps, "
        f"{args.audio_track} audio of {result.audio_duration_s:.2f} s); making it took {format_seconds(elapsed)} "
        f"({elapsed / video_s:.2f} s per second of video, on {result.device})"
    )
    if result.codes:
        print(f"expression codes: {result.codes}")
    if result.meshes_dir:
        print(f"meshes: {result.meshes_dir}")
    return 0


def _facial_smoothing(args: argparse.Namespace):
    from ops.geometry.facial_smoothing import FacialSmoothing

    if args.no_facial_smoothing:
        return None
    try:
        return FacialSmoothing(centre=tuple(args.smoothing_centre), width=args.smoothing_width)
    except ValueError as error:
        raise ValueError(f"--smoothing-centre/--smoothing-width: {error}") from None


def _identity(path: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"--identity {path}: not a readable .npy array ({error})") from None


def _load_run_config(path: str | None) -> dict | None:
    if not path:
        return None
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise FileNotFoundError(f"-c {path}: {error.strerror or error}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(f"-c {path}: not valid YAML{line}: {getattr(error, 'problem', None) or error}") from None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"-c {path}: a run config is a YAML mapping (ops: ...), got {type(config).__name__}")
    return config


def _print_quality_gate(result) -> None:
    """The evaluation's blocking check, spelled out: which lip metric lost to which baseline, by how much."""
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name != QUALITY_GATE:
            continue
        verdict = "passed" if evaluation.passed else "FAILED"
        print(f"quality gate {evaluation.check_name} {verdict}:")
        for part in (evaluation.description or "").split("; "):
            print(f"    {part}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facetalk", description="FaceTalk pipeline commands.", formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, run) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, formatter_class=DefaultsHelpFormatter)
        sub.set_defaults(run=run)
        sub.add_argument("-v", "--verbose", action="store_true", help="Dagster's log and, on errors, the traceback")
        return sub

    demo_data = command("demo-data", "write the deterministic demo dataset to PATH", _demo_data)
    demo_data.add_argument("path", metavar="PATH", help="folder to write (created; sequence folders go inside)")
    # The defaults are DemoDataConfig's (tests/test_cli_usage.py holds them equal), written out
    # here so that `facetalk --help` does not import torch.
    demo_data.add_argument("--identities", type=int, default=10, help="number of synthetic people")
    demo_data.add_argument("--sequences", type=int, default=3, help="sequences per identity")
    demo_data.add_argument("--seconds", type=float, default=4.0, help="length of each sequence in seconds")
    demo_data.add_argument("--mesh-resolution", type=int, default=64, help="NPHM-like mesh grid (0: no meshes)")
    demo_data.add_argument(
        "--speech", choices=("auto", "espeak-ng", "formant"), default="auto",
        help="who speaks the sentences: espeak-ng with phoneme timings (auto: when installed) or the formant synthesizer",
    )  # fmt: skip
    demo_data.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")

    demo_encoder = command(
        "demo-encoder", "train the demo's audio encoder on espeak-ng speech (facetalk demo does it once)", _demo_encoder
    )
    demo_encoder.add_argument("path", metavar="PATH", nargs="?", help="folder to write (default: the demo encoder's)")
    demo_encoder.add_argument("--steps", type=int, default=300, help="training steps")  # = DemoEncoderConfig's
    demo_encoder.add_argument("--seed", type=int, default=0, help="random seed")

    for name, run, text in (
        ("ingest", _ingest, "register every sequence folder and materialize its per-sequence assets"),
        ("segments", _segments, "materialize training_segments (the build_training_segments job)"),
        ("demo", _demo, "run the main job on the demo data (generated if absent)"),
    ):
        sub = command(name, text, run)
        sub.add_argument("--data-root", help="dataset root (default: $FACETALK_DATA_ROOT or the demo data)")
        sub.add_argument("--store", help="store root (default: $FACETALK_STORE or var/store)")
        if name != "segments":
            sub.add_argument(
                "--fps", type=int, help="frame rate of the dataset's tracking (default: 24, the FaceTalk release)"
            )
            sub.add_argument(
                "--encoder", help="Wav2Vec2 weights directory or checkpoint (default: $FACETALK_AUDIO_ENCODER)"
            )
            sub.add_argument(
                "--workers", type=int, default=_cores(), help="sequences ingested at once (default: the cores)"
            )
        if name == "ingest":
            sub.add_argument("--sequence", action="append", help="only this sequence key (repeatable; default: all)")
            sub.add_argument("-c", "--config", help="per-sequence run config YAML, e.g. configs/ingest_sequence.yaml")
            sub.add_argument("--force", action="store_true", help="run unchanged sequences too")
            sub.add_argument(
                "--prune", action="store_true", help="remove sequences whose folder is gone (partition + store)"
            )
            sub.add_argument(
                "--allow-random-encoder",
                action="store_true",
                help="ingest real data with the demo encoder (its features do not describe real speech)",
            )
        if name == "segments":
            sub.add_argument("-c", "--config", help="run config YAML, e.g. configs/training_segments.yaml")
        if name == "demo":
            sub.add_argument(
                "-c",
                "--config",
                help="run config YAML of the retrain job (ops: training_segments, facetalk_model, ...)",
            )

    remove = command("remove", "remove sequences: deregister the partition, delete the store", _remove)
    remove.add_argument("keys", nargs="+", metavar="KEY", help="sequence key, e.g. ID00_SEN01")
    remove.add_argument("--data-root", help="dataset root (default: $FACETALK_DATA_ROOT or the demo data)")
    remove.add_argument("--store", help="store root (default: $FACETALK_STORE or var/store)")

    animate = command("animate", "any speech audio -> talking-head MP4 with the audio", _animate)
    animate.add_argument("audio", help="any audio (or video) file ffmpeg reads")
    animate.add_argument("-o", "--out", required=True, help="output .mp4 (codes go to OUT.npz)")
    animate.add_argument(
        "-m", "--checkpoint", help="trained motion model (default: the store's checkpoints/facetalk_model/model.ckpt)"
    )
    animate.add_argument(
        "--encoder", help="Wav2Vec2 weights the model was trained with (default: $FACETALK_AUDIO_ENCODER)"
    )
    animate.add_argument("--identity", help=".npy identity code [1344] (default: zeros, the mean head)")
    animate.add_argument(
        "--head", choices=["analytic", "nphm"], default="analytic", help="head model that meshes the codes"
    )
    animate.add_argument("--nphm-checkpoint", help="NPHM weights (required with --head nphm)")
    animate.add_argument("--flame-template", help="template .ply (required for FLAME-variant checkpoints)")
    animate.add_argument(
        "--audio",
        dest="audio_track",
        choices=["original", "cleaned"],
        default="original",
        help="audio track of the MP4: the file as given (AAC at its own rate and channels), or the cleaned "
        "16 kHz mono track the model heard",
    )
    animate.add_argument(
        "--resolution", type=int, default=64, help="marching-cubes grid per axis (64 preview, 256 final)"
    )
    animate.add_argument("--steps", type=int, default=50, help="DDIM sampling steps")
    animate.add_argument("--guidance", type=float, help="classifier-free guidance weight (default: the model's)")
    animate.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same motion)")
    animate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: cuda when available)")
    animate.add_argument("--size", type=int, default=512, help="video width and height in pixels")
    animate.add_argument("--meshes", action="store_true", help="also write OUT_meshes/frame_NNNNN.ply")
    animate.add_argument("--no-codes", action="store_true", help="do not write OUT.npz")
    animate.add_argument("--max-seconds", type=float, default=600, help="refuse longer audio")
    animate.add_argument(
        "--no-facial-smoothing",
        action="store_true",
        help="mesh the raw codes (default: FaceTalk's facial smoothing: the mouth keeps its motion, "
        "the rest of the head is smoothed over time)",
    )
    animate.add_argument(
        "--smoothing-centre", type=float, nargs=3, metavar=("X", "Y", "Z"), default=list(MOUTH_CENTRE),
        help="centre of the facial smoothing's mouth Gaussian, head coordinates",
    )  # fmt: skip
    animate.add_argument(
        "--smoothing-width", type=float, default=0.1, help="standard deviation of the mouth Gaussian, head units"
    )
    animate.add_argument(
        "--cpu-threads", type=int, default=1,
        help="torch threads for every step (1 is fastest on a busy CPU and leaves a core to rendering; 0: torch's own choice)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; any error ends as one line `facetalk <command>: error: ...` (traceback with -v)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"facetalk {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # whatever the cause: one line for the user, the traceback only with -v
        if args.verbose:
            print(traceback_text(error), file=sys.stderr, end="")
        print(error_line(args.command, error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
