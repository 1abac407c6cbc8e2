"""Test helpers for videos: write frames to an MP4 in one call, and read an MP4's facts with ffprobe."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ops.geometry.video import AudioSource, FfmpegError, Mp4Writer, VideoConfig


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    config: VideoConfig | None = None,
    audio: AudioSource = None,
    sample_rate: int | None = None,
) -> Path:
    """Encode frames (any iterable, consumed lazily) into an MP4 at `path`; returns the path."""
    config = config or VideoConfig(fps=24)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = first.shape[:2]
    with Mp4Writer(path, width, height, config, audio, sample_rate) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return writer.path


def probe_video(path: str | os.PathLike, ffprobe: str = "ffprobe") -> dict:
    """Facts about an MP4 from ffprobe: frame count, fps, size, codecs, durations.

    Returns {"n_frames", "fps", "width", "height", "video_codec", "pix_fmt", "video_duration",
    "audio_codec", "audio_duration", "audio_sample_rate", "audio_channels"} (audio keys are None without audio).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    command = [ffprobe, "-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json", str(path)]
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError as error:
        raise FfmpegError(
            f"{path}: ffprobe binary {ffprobe!r} not found; install ffmpeg (apt-get install ffmpeg)"
        ) from error
    if result.returncode != 0:
        raise FfmpegError(
            f"{path}: ffprobe failed (code {result.returncode}):\n{result.stderr.decode(errors='replace')[-2000:]}"
        )
    info = json.loads(result.stdout)
    video = next((s for s in info["streams"] if s["codec_type"] == "video"), None)
    audio = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    if video is None:
        raise FfmpegError(f"{path}: no video stream")
    numerator, denominator = (int(x) for x in video["avg_frame_rate"].split("/"))

    def seconds(stream: dict | None) -> float | None:
        return float(stream["duration"]) if stream is not None and "duration" in stream else None

    return {
        "n_frames": int(video.get("nb_read_packets", video.get("nb_frames", 0))),
        "fps": numerator / denominator if denominator else 0.0,
        "width": int(video["width"]),
        "height": int(video["height"]),
        "video_codec": video["codec_name"],
        "pix_fmt": video.get("pix_fmt"),
        "video_duration": seconds(video),
        "audio_codec": audio["codec_name"] if audio else None,
        "audio_duration": seconds(audio),
        "audio_sample_rate": int(audio["sample_rate"]) if audio else None,
        "audio_channels": int(audio["channels"]) if audio else None,
    }
