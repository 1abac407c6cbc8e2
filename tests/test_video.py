"""MP4 writing through the real ffmpeg, checked with ffprobe."""

import struct

import numpy as np
import pytest
import trimesh

from ops.geometry.render import RenderConfig, Renderer, render_sequence, side_by_side
from ops.geometry.video import FfmpegError, Mp4Writer, VideoConfig
from tests.video_tools import probe_video, write_mp4

FPS = 24
N_FRAMES = 30
SAMPLE_RATE = 16000


def _talking_sphere(n_frames=N_FRAMES):
    mesh = trimesh.creation.icosphere(subdivisions=2)
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    jaw = np.linspace(0.0, 0.3, n_frames)[:, None]
    sequence = np.repeat(vertices[None], n_frames, axis=0)
    sequence[:, :, 1] -= jaw * (vertices[None, :, 1] < 0)  # lower half moves down over time
    return sequence, faces


def _tone(seconds):
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _top_level_boxes(path):
    boxes, data = [], path.read_bytes()
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin1"))
        if size < 8:
            break
        offset += size
    return boxes


def test_render_to_mp4_round_trip(tmp_path):
    sequence, faces = _talking_sphere()
    target = tmp_path / "talk.mp4"
    with Renderer(RenderConfig(width=128, height=96)) as renderer:
        frames = render_sequence(renderer, [(frame, faces) for frame in sequence])  # a generator: streamed
        config = VideoConfig(fps=FPS, preset="ultrafast")
        write_mp4(target, frames, config, audio=_tone(N_FRAMES / FPS), sample_rate=SAMPLE_RATE)
    info = probe_video(target)
    assert info["n_frames"] == N_FRAMES
    assert info["fps"] == pytest.approx(FPS)
    assert (info["width"], info["height"]) == (128, 96)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["audio_codec"] == "aac"
    assert info["audio_duration"] == pytest.approx(N_FRAMES / FPS, abs=1 / FPS)
    boxes = _top_level_boxes(target)
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]  # no temp files left behind


def test_side_by_side_video_with_audio_file(tmp_path):
    import soundfile

    audio_path = tmp_path / "speech.wav"
    soundfile.write(audio_path, _tone(0.5), SAMPLE_RATE)
    sequence, faces = _talking_sphere(12)
    gt = [(v, faces) for v in sequence]
    generated = [(v * 0.9, faces) for v in sequence]
    with Renderer(RenderConfig(width=64, height=64)) as renderer:
        frames = (
            side_by_side(*pair) for pair in zip(render_sequence(renderer, gt), render_sequence(renderer, generated))
        )
        path = write_mp4(tmp_path / "compare.mp4", frames, VideoConfig(fps=FPS, preset="ultrafast"), audio=audio_path)
    info = probe_video(path)
    assert (info["width"], info["height"], info["n_frames"]) == (128, 64, 12)
    assert info["audio_duration"] == pytest.approx(0.5, abs=1 / FPS)


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = [np.full((33, 51, 3), 128, np.uint8)] * 3
    info = probe_video(write_mp4(tmp_path / "odd.mp4", frames, VideoConfig(fps=10, preset="ultrafast")))
    assert (info["width"], info["height"], info["n_frames"]) == (52, 34, 3)
    assert info["audio_codec"] is None


def test_missing_ffmpeg_binary_is_reported(tmp_path):
    config = VideoConfig(fps=FPS, ffmpeg=str(tmp_path / "no-such-ffmpeg"))
    with pytest.raises(FfmpegError, match="not found"):
        write_mp4(
            tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8)], config, audio=_tone(0.1), sample_rate=SAMPLE_RATE
        )
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_carries_its_stderr(tmp_path):
    config = VideoConfig(fps=FPS, preset="no-such-preset")
    with pytest.raises(FfmpegError, match="no-such-preset") as caught:
        write_mp4(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8)] * 2, config)
    assert "x.mp4" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_exception_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="renderer crashed"):
        with Mp4Writer(tmp_path / "x.mp4", 16, 16, VideoConfig(fps=FPS, preset="ultrafast")) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("renderer crashed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_shape_is_rejected(tmp_path):
    with Mp4Writer(tmp_path / "x.mp4", 16, 16, VideoConfig(fps=FPS)) as writer:
        with pytest.raises(ValueError, match=r"x.mp4: frame 0 must be uint8 \[16, 16, 3\]"):
            writer.write(np.zeros((16, 17, 3), np.uint8))
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert probe_video(tmp_path / "x.mp4")["n_frames"] == 1


def test_waveform_needs_a_sample_rate(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        Mp4Writer(tmp_path / "x.mp4", 16, 16, VideoConfig(fps=FPS), audio=_tone(0.1))


def test_probe_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        probe_video(tmp_path / "nothing.mp4")
