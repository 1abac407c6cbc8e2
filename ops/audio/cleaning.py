"""Turn any speech recording into the 16 kHz mono, loudness-normalized float32 the encoder expects.

Decoding: libsndfile (via `soundfile`) for WAV/FLAC/OGG/AIFF in any rate and bit depth; everything
else (mp3, m4a/aac, opus in mp4/webm, video files with an audio track) through the ffmpeg binary,
driven by ffmpeg-python, decoding the first audio stream to float32 PCM on a pipe.

Cleaning, in order (each step's reason is next to it in `clean_audio`):
  downmix to mono (channel mean) -> resample to 16 kHz (soxr, HQ) -> remove DC (zero-phase
  high-pass) -> normalize loudness to a target in LUFS (ITU-R BS.1770-4 via pyloudnorm; RMS for clips
  under 0.4 s) -> look-ahead peak limiter so no sample exceeds the ceiling (-1 dBFS by default).

Every refusal is an `AudioError` (a ValueError) whose message starts with the file it concerns.
Library errors are folded into that message and not chained (`from None`): reports that show the
innermost cause (Dagster failure summaries) would otherwise show "ffprobe error" and not the file.
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyloudnorm
import scipy.ndimage
import scipy.signal
import soundfile
import soxr

TARGET_RATE = 16_000
TARGET_LUFS = -23.0  # EBU R128 programme loudness
MIN_DURATION_S = 0.1
MAX_DURATION_S = 20 * 60.0

CLIPPING_LEVEL = 0.999  # |x| at or above this (of full scale) counts as clipped
ANALYSIS_FRAME_S = 0.020  # 20 ms frames for the silence statistics
SILENT_FRAME_DBFS = -50.0  # a 20 ms frame quieter than this (after normalization) counts as silence
REFUSE_BELOW_DBFS = -70.0  # if even the loudest 20 ms frame is quieter, there is nothing to normalize
HIGHPASS_HZ = 20.0
PEAK_CEILING_DBFS = -1.0
LIMITER_WINDOW_S = 0.005
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block; shorter clips cannot be measured


class AudioError(ValueError):
    """An input that cannot become clean speech audio; the message names the file and the problem."""


class SilentAudioError(AudioError):
    """Audio long enough but with nothing above REFUSE_BELOW_DBFS: nothing to normalize (animate
    turns it into an idle face; ingestion refuses it)."""


class FFmpegUnavailableError(RuntimeError):
    """A file needs ffmpeg to decode, but ffmpeg-python or the ffmpeg/ffprobe binaries are missing."""


@dataclass(frozen=True)
class AudioStats:
    """What cleaning saw and did; flat scalars so it can go straight into asset metadata."""

    duration_s: float  # of the cleaned output
    source_rate: int
    source_channels: int
    clipping_ratio: float  # fraction of all source samples (all channels) with |x| >= 0.999
    silence_ratio: float  # fraction of 20 ms output frames with RMS below -50 dBFS
    source_peak: float  # max |x| of the source, full scale = 1
    output_peak: float
    loudness_lufs_before: float  # of the 16 kHz mono signal before gain; RMS dBFS when method == "rms"
    loudness_lufs_after: float
    normalization: str  # "bs1770" or "rms" (clip too short or too sparse for gated loudness)
    limiter_reduction_db: float  # deepest gain reduction the peak limiter applied (0 = untouched)

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class CleanedAudio:
    samples: np.ndarray  # [n] float32 mono
    sample_rate: int
    stats: AudioStats


# ----------------------------------------------------------------------------------------- decoding


def require_ffmpeg() -> None:
    """Raise FFmpegUnavailableError unless ffmpeg-python is importable and ffmpeg + ffprobe are on PATH."""
    missing = []
    if importlib.util.find_spec("ffmpeg") is None or not hasattr(importlib.import_module("ffmpeg"), "probe"):
        missing.append("the Python package ffmpeg-python (pip install ffmpeg-python)")
    for binary in ("ffmpeg", "ffprobe"):
        if shutil.which(binary) is None:
            missing.append(f"the `{binary}` binary on PATH (apt-get install ffmpeg)")
    if missing:
        raise FFmpegUnavailableError("decoding this audio format needs " + " and ".join(missing))


def load_audio(path: str | Path, max_duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32 in [-1, 1]: [n] for mono, [n, channels] otherwise.

    Refuses, before decoding, files longer than `max_duration_s` (when given) so a mislabelled
    multi-hour recording does not fill memory.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")

    try:
        info = soundfile.info(str(path))
    except soundfile.LibsndfileError as sndfile_error:
        waveform, rate = _decode_with_ffmpeg(path, max_duration_s, sndfile_error)
    else:
        waveform, rate = _decode_with_soundfile(path, info, max_duration_s)

    if waveform.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds 0 samples")
    return (waveform[:, 0] if waveform.shape[1] == 1 else waveform), rate


def _decode_with_soundfile(path: Path, info, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    """`info` is soundfile.info(path), already known to succeed."""
    _refuse_too_long(path, info.frames / info.samplerate, max_duration_s)
    missing_bytes = _wav_missing_data_bytes(path) if info.format == "WAV" else 0
    if missing_bytes > 0:
        raise AudioError(
            f"{path}: truncated WAV file: its header announces {missing_bytes} more bytes of samples "
            "than the file holds"
        )
    try:
        waveform, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        raise AudioError(f"{path}: corrupt {info.format} audio, decoding failed: {error}") from None
    if waveform.shape[0] < info.frames:
        raise AudioError(
            f"{path}: truncated or corrupt {info.format} audio: decoded {waveform.shape[0]} of "
            f"{info.frames} announced samples"
        )
    return waveform, rate


def _wav_missing_data_bytes(path: Path) -> int:
    """How many bytes the WAV `data` chunk announces beyond the end of the file (0 if complete).

    libsndfile silently reads what is there, so a WAV cut off mid-transfer would otherwise pass as
    a shorter recording. Streaming writers put 0 or 0xFFFFFFFF in the size field: not truncation.
    """
    file_size = path.stat().st_size
    with path.open("rb") as file:
        riff = file.read(12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RIFX") or riff[8:12] != b"WAVE":
            return 0
        size_format = "<I" if riff[:4] == b"RIFF" else ">I"
        while True:
            header = file.read(8)
            if len(header) < 8:
                return 0
            chunk_id, (chunk_size,) = header[:4], struct.unpack(size_format, header[4:])
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return 0
                return max(0, file.tell() + chunk_size - file_size)
            file.seek(chunk_size + (chunk_size & 1), 1)  # chunks are padded to even sizes


def _decode_with_ffmpeg(path: Path, max_duration_s: float | None, sndfile_error: Exception) -> tuple[np.ndarray, int]:
    try:
        require_ffmpeg()
    except FFmpegUnavailableError as error:
        raise AudioError(
            f"{path}: libsndfile cannot read it ({sndfile_error}) and ffmpeg is unavailable to try: {error}"
        ) from None
    import ffmpeg

    # `file:` stops ffmpeg reading a name like "http://..." or "concat:..." as a protocol.
    source = f"file:{path.resolve()}"
    try:
        probe = ffmpeg.probe(source)
    except ffmpeg.Error as error:
        raise AudioError(
            f"{path}: not an audio file, or corrupt: neither libsndfile ({sndfile_error}) nor ffmpeg "
            f"({_last_line(error.stderr)}) can read it"
        ) from None
    streams = [stream for stream in probe.get("streams", []) if stream.get("codec_type") == "audio"]
    if not streams:
        container = probe.get("format", {}).get("format_name", "an unknown format")
        raise AudioError(f"{path}: no audio stream (ffmpeg reads it as {container})")
    stream = streams[0]
    rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    announced_s = _announced_duration_s(probe, stream)
    if announced_s is not None:
        _refuse_too_long(path, announced_s, max_duration_s)

    try:
        pcm, _ = (
            ffmpeg.input(source)
            .output("pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le", ar=rate, ac=channels)
            .global_args("-nostdin", "-v", "error")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as error:
        message = _last_line(error.stderr)
        raise AudioError(f"{path}: corrupt audio, ffmpeg failed to decode it: {message}") from None
    waveform = np.frombuffer(pcm, dtype="<f4").astype(np.float32).reshape(-1, channels)

    decoded_s = waveform.shape[0] / rate
    # Compressed formats carry encoder delay/padding (tens of ms); more missing than that is a cut-off file.
    if announced_s is not None and announced_s - decoded_s > max(0.1, 0.02 * announced_s):
        raise AudioError(
            f"{path}: truncated or corrupt audio: decoded {decoded_s:.2f} s of the {announced_s:.2f} s "
            "its container announces"
        )
    return waveform, rate


def _announced_duration_s(probe: dict, stream: dict) -> float | None:
    for value in (stream.get("duration"), probe.get("format", {}).get("duration")):
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def _refuse_too_long(path: Path | str, duration_s: float, max_duration_s: float | None) -> None:
    if max_duration_s is not None and duration_s > max_duration_s:
        raise AudioError(f"{path}: audio is too long: {duration_s:.1f} s, the limit is {max_duration_s:.1f} s")


# ----------------------------------------------------------------------------------------- cleaning


def clean_audio(
    waveform: np.ndarray,
    sample_rate: int,
    target_rate: int = TARGET_RATE,
    target_lufs: float = TARGET_LUFS,
    *,
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float = MAX_DURATION_S,
    source: str | Path = "<waveform>",
) -> CleanedAudio:
    """Downmix, resample, remove DC, normalize loudness and limit peaks.

    waveform: [n] or [n, channels], float in [-1, 1] (integer PCM is scaled by its dtype's range).
    `source` names the input in error messages.
    """
    samples = _as_float_samples(waveform, source)
    if sample_rate <= 0:
        raise AudioError(f"{source}: invalid sample rate {sample_rate}")
    n_source, n_channels = samples.shape
    if n_source == 0:
        raise AudioError(f"{source}: audio holds 0 samples")
    source_duration = n_source / sample_rate
    if source_duration < min_duration_s:
        raise AudioError(
            f"{source}: audio is too short: {source_duration:.3f} s, the minimum is {min_duration_s:.3f} s"
        )
    _refuse_too_long(source, source_duration, max_duration_s)
    if not np.isfinite(samples).all():
        n_bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
        raise AudioError(f"{source}: audio contains {n_bad} NaN/Inf samples")

    magnitude = np.abs(samples)
    source_peak = float(magnitude.max())
    clipping_ratio = float(np.count_nonzero(magnitude >= CLIPPING_LEVEL) / magnitude.size)
    del magnitude

    # Channel mean, not the first channel: stereo speech recordings are sometimes panned to one side.
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    if sample_rate != target_rate:
        mono = soxr.resample(mono, sample_rate, target_rate, quality="HQ").astype(np.float32)
    if mono.size < 8:
        raise AudioError(f"{source}: audio is too short to resample ({mono.size} samples at {target_rate} Hz)")
    mono = _remove_dc(mono, target_rate)

    loudest_frame_dbfs = float(_frame_rms_dbfs(mono, target_rate).max())
    if loudest_frame_dbfs < REFUSE_BELOW_DBFS:
        what = "digital silence" if source_peak == 0.0 else f"loudest 20 ms at {loudest_frame_dbfs:.1f} dBFS"
        raise SilentAudioError(
            f"{source}: audio is silent ({what}, threshold {REFUSE_BELOW_DBFS:.0f} dBFS); it cannot be normalized"
        )

    loudness_before, method = _measure_loudness(mono, target_rate)
    normalized = mono * np.float32(10.0 ** ((target_lufs - loudness_before) / 20.0))
    limited, reduction_db = _limit_peaks(normalized, target_rate, 10.0 ** (PEAK_CEILING_DBFS / 20.0))
    loudness_after = _measure_loudness(limited, target_rate)[0]

    stats = AudioStats(
        duration_s=limited.size / target_rate,
        source_rate=int(sample_rate),
        source_channels=int(n_channels),
        clipping_ratio=clipping_ratio,
        silence_ratio=float(np.mean(_frame_rms_dbfs(limited, target_rate) < SILENT_FRAME_DBFS)),
        source_peak=source_peak,
        output_peak=float(np.abs(limited).max()),
        loudness_lufs_before=float(loudness_before),
        loudness_lufs_after=float(loudness_after),
        normalization=method,
        limiter_reduction_db=reduction_db,
    )
    return CleanedAudio(samples=limited, sample_rate=target_rate, stats=stats)


def clean_audio_file(
    path: str | Path,
    target_rate: int = TARGET_RATE,
    target_lufs: float = TARGET_LUFS,
    *,
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float = MAX_DURATION_S,
) -> CleanedAudio:
    """load_audio + clean_audio, with errors naming `path`."""
    waveform, rate = load_audio(path, max_duration_s=max_duration_s)
    return clean_audio(
        waveform,
        rate,
        target_rate,
        target_lufs,
        min_duration_s=min_duration_s,
        max_duration_s=max_duration_s,
        source=path,
    )


def _as_float_samples(waveform: np.ndarray, source: str | Path) -> np.ndarray:
    """-> [n, channels] float32."""
    array = np.asarray(waveform)
    if array.ndim not in (1, 2):
        raise AudioError(f"{source}: expected a waveform of shape [n] or [n, channels], got {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        midpoint = (int(info.max) + int(info.min) + 1) / 2  # 128 for unsigned 8-bit PCM, 0 for signed
        array = (array.astype(np.float64) - midpoint) / (int(info.max) + 1 - midpoint)
    elif not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"{source}: expected float or integer PCM samples, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    return array[:, None] if array.ndim == 1 else array


def _remove_dc(mono: np.ndarray, rate: int) -> np.ndarray:
    """Subtract the mean, then a zero-phase 20 Hz high-pass for slow drift and rumble.

    Zero-phase (forward-backward) so speech is not shifted in time relative to the motion frames.
    Very short clips only get the mean removed: the filter's edge padding needs more samples.
    """
    mono = mono - np.float32(mono.mean(dtype=np.float64))
    sos = scipy.signal.butter(2, HIGHPASS_HZ, btype="highpass", fs=rate, output="sos")
    if mono.size <= 3 * (2 * sos.shape[0] + 1) * 4:
        return mono.astype(np.float32)
    return scipy.signal.sosfiltfilt(sos, mono).astype(np.float32)


def _frame_rms_dbfs(mono: np.ndarray, rate: int) -> np.ndarray:
    """RMS level of consecutive non-overlapping 20 ms frames (the last partial frame included), dBFS."""
    frame = max(1, int(round(ANALYSIS_FRAME_S * rate)))
    padded = np.pad(mono, (0, (-mono.size) % frame))
    frames = padded.reshape(-1, frame).astype(np.float64)
    lengths = np.full(frames.shape[0], frame)
    lengths[-1] = mono.size - frame * (frames.shape[0] - 1)
    rms = np.sqrt((frames**2).sum(axis=1) / lengths)
    return 20.0 * np.log10(np.maximum(rms, 1e-12))


def _measure_loudness(mono: np.ndarray, rate: int) -> tuple[float, str]:
    """Integrated loudness (BS.1770-4, gated) in LUFS; RMS level in dBFS when that cannot be measured.

    For speech the two agree within a few dB, so the RMS fallback lands near the target; it is used
    for clips shorter than one 400 ms gating block, or when every block falls under the gate.
    """
    if mono.size >= LOUDNESS_BLOCK_S * rate:
        lufs = pyloudnorm.Meter(rate).integrated_loudness(mono.astype(np.float64))
        if np.isfinite(lufs):
            return float(lufs), "bs1770"
    rms = float(np.sqrt(np.mean(mono.astype(np.float64) ** 2)))
    return 20.0 * np.log10(max(rms, 1e-12)), "rms"


def _limit_peaks(mono: np.ndarray, rate: int, ceiling: float) -> tuple[np.ndarray, float]:
    """Look-ahead limiter: smooth gain reduction around every sample that would exceed `ceiling`.

    The needed gain (ceiling / |x|, capped at 1) is spread to a +-window by a minimum filter, then
    smoothed by a moving average of the same width. Every value the average sees near a peak is
    already <= that peak's needed gain, so the peak lands at or below the ceiling without the
    clicks of hard clipping. A final clip only removes float rounding.
    """
    magnitude = np.abs(mono)
    if magnitude.max() <= ceiling:
        return mono.astype(np.float32), 0.0
    needed = np.minimum(1.0, ceiling / np.maximum(magnitude, 1e-12))
    window = max(1, int(LIMITER_WINDOW_S * rate)) | 1  # odd, so both filters are centred
    gain = scipy.ndimage.minimum_filter1d(needed, size=window, mode="nearest")
    gain = scipy.ndimage.uniform_filter1d(gain, size=window, mode="nearest")
    limited = np.clip(mono * gain, -ceiling, ceiling).astype(np.float32)
    return limited, float(-20.0 * np.log10(gain.min()))
