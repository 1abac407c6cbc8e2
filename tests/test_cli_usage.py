"""`facetalk` as a new user meets it: `--help`, `--version`, one-line errors, words instead of reprs.

Real subprocesses of the command line (the parser itself is also walked in-process, for every option).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.cli_errors import speak_flags
from pipelines.cli_help import ui_hint

REPO = Path(__file__).resolve().parents[1]


def facetalk(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), FACETALK_HOME=str(tmp_path / "home"))
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), FACETALK_DATA_ROOT=str(tmp_path / "data"))
    env.pop("FACETALK_AUDIO_ENCODER", None)
    command = [sys.executable, "-m", "pipelines.cli", *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(result: subprocess.CompletedProcess, command: str, *words: str) -> str:
    """Exit 2, no traceback, and exactly one `facetalk <command>: error: ...` line naming `words`."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"facetalk {command}: error: ")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_its_default_shows():
    for name, sub in _subcommands().items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"facetalk {name}: {action.option_strings or action.dest} has no help"
            if not action.option_strings:
                continue
            if action.default is None or action.default is False or "(default:" in action.help:
                continue  # a flag, or a default said in words (`$FACETALK_STORE`, `the cores`)
            shown = f"(default: {action.default})"
            assert shown in " ".join(text.split()), f"facetalk {name} --help does not show {shown}"


def test_help_and_version_from_the_command_line(tmp_path):
    animate = facetalk(tmp_path, "animate", "--help")
    assert animate.returncode == 0
    flat = " ".join(animate.stdout.split())
    for default in ("(default: 64)", "(default: 50)", "(default: 512)", "(default: 600)", "(default: original)"):
        assert default in flat, animate.stdout
    demo_data = " ".join(facetalk(tmp_path, "demo-data", "--help").stdout.split())
    for words in ("PATH folder to write", "number of synthetic people (default: 10)", "(default: 4.0)"):
        assert words in demo_data

    shown = facetalk(tmp_path, "--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"facetalk {version('facetalk-pipeline')}"


def test_demo_data_says_what_it_wrote_in_words(tmp_path):
    out = tmp_path / "demo"
    args = ("--identities", "1", "--sequences", "1", "--seconds", "0.5", "--mesh-resolution", "0")
    result = facetalk(tmp_path, "demo-data", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert f"wrote the demo dataset to {out}" in result.stdout
    assert "1 sequences of 1 identities, 12 frames in all" in result.stdout
    assert f"next: facetalk ingest --data-root {out}" in result.stdout
    assert "speech: " in result.stdout
    assert "DemoDatasetSummary(" not in result.stdout and "PosixPath(" not in result.stdout


def test_demo_data_defaults_are_the_demo_config():
    from ops.demo.dataset import DemoDataConfig

    config = DemoDataConfig()
    args = build_parser().parse_args(["demo-data", "out"])
    assert (args.identities, args.sequences, args.seconds, args.mesh_resolution, args.speech) == (
        config.n_identities, config.n_sequences, config.seconds, config.nphm_mesh_resolution, config.speech
    )  # fmt: skip
    from ops.demo.encoder_training import DemoEncoderConfig

    encoder_args = build_parser().parse_args(["demo-encoder"])
    assert (encoder_args.path, encoder_args.steps, encoder_args.seed) == (
        None, DemoEncoderConfig().steps, DemoEncoderConfig().seed
    )  # fmt: skip


def test_errors_are_one_line_with_the_traceback_only_when_verbose(tmp_path):
    missing = tmp_path / "nowhere"
    quiet = facetalk(tmp_path, "ingest", "--data-root", str(missing), "--allow-random-encoder")
    assert_one_error_line(quiet, "ingest", str(missing), "does not exist")

    loud = facetalk(tmp_path, "ingest", "--data-root", str(missing), "--allow-random-encoder", "-v")
    assert loud.returncode == 2 and "Traceback" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("facetalk ingest: error: ")

    (tmp_path / "data").mkdir()
    store_file = tmp_path / "store.txt"
    store_file.write_text("a file, not a folder\n")
    segments = facetalk(tmp_path, "segments", "--store", str(store_file))
    assert_one_error_line(segments, "segments", str(store_file))

    bad_config = tmp_path / "list.yaml"
    bad_config.write_text("- not\n- a mapping\n")
    config = facetalk(tmp_path, "segments", "-c", str(bad_config))
    assert_one_error_line(config, "segments", str(bad_config), "YAML mapping")

    audio = tmp_path / "speech.wav"
    audio.write_bytes(b"RIFF....WAVEfmt ")
    no_model = facetalk(tmp_path, "animate", str(audio), "-o", str(tmp_path / "out.mp4"))
    assert_one_error_line(no_model, "animate", "-m/--checkpoint", "facetalk demo")
    wav_as_model = facetalk(tmp_path, "animate", str(audio), "-o", str(tmp_path / "out.mp4"), "-m", str(audio))
    assert_one_error_line(wav_as_model, "animate", str(audio), "is not a model checkpoint (a WAV audio file)")


def test_python_parameter_names_become_flags():
    assert speak_flags("pass flame_template=<template .ply>, or use") == "pass --flame-template <template .ply>, or use"
    assert speak_flags("head 'nphm' needs nphm_checkpoint (the NPHM weights)") == (
        "head 'nphm' needs --nphm-checkpoint (the NPHM weights)"
    )
    assert speak_flags("device 'cuda' requested, but torch sees no CUDA GPU").startswith("--device 'cuda' requested")
    assert speak_flags("identity_code must have 1344 values") == "--identity must have 1344 values"


@pytest.mark.parametrize("in_checkout", [True, False])
def test_ui_hint_names_a_command_that_works_where_the_user_is(tmp_path, in_checkout):
    home = tmp_path / "dagster_home"
    if in_checkout:
        assert ui_hint(home, REPO) == f"`make ui` in {REPO}"
    else:
        (tmp_path / "site-packages").mkdir()  # an installed package: no Makefile beside pipelines/
        assert (
            ui_hint(home, tmp_path / "site-packages") == f"`DAGSTER_HOME={home} dagster dev -m pipelines -h 127.0.0.1`"
        )


def test_animate_on_cuda_without_a_gpu_is_the_first_and_only_line(tmp_path):
    """Before looking for a model or reading the audio: the device is what cannot work."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = facetalk(
        tmp_path, "animate", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "x.mp4"), "--device", "cuda"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert_one_error_line(result, "animate", "--device 'cuda' requested", "no CUDA GPU")
    assert not (tmp_path / "x.mp4").exists()


def test_metrics_table_headings_print_without_markdown():
    from pipelines.cli_output import metrics_lines

    markdown = "**nphm**: 6 whole test sequences:\n\n| row | l2 |\n|---|---|\n| model | 0.4 |\n\n**A baseline wins on 1 comparison(s):**\n- l2"
    assert metrics_lines(markdown) == [
        "nphm: 6 whole test sequences:",
        "  row    l2",
        "  model  0.4",
        "A baseline wins on 1 comparison(s):",
    ]
