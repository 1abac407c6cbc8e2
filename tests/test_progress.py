"""Progress for people waiting: log lines with frames/s and ETA when not on a terminal."""

from __future__ import annotations

import io

from ops.progress import FrameProgress, format_seconds


def test_seconds_read_as_people_say_them():
    assert [format_seconds(s) for s in (12.34, 125, 3725)] == ["12.3 s", "2 min 05 s", "1 h 02 min"]


def test_log_lines_every_tenth_of_the_frames_with_rate_and_eta():
    lines: list[str] = []
    with FrameProgress("meshing + rendering", 200, lines.append, tty=False) as progress:
        for done in range(1, 201):
            progress.update(done)
    assert lines[0] == "meshing + rendering: 200 frames"
    assert len(lines) == 11 and lines[-1].startswith("meshing + rendering: 200/200 frames (100%), ")
    assert lines[1].startswith("meshing + rendering: 20/200 frames (10%), ") and "frames/s, ETA " in lines[1]


def test_a_slow_run_logs_every_few_seconds_too():
    lines: list[str] = []
    progress = FrameProgress("frames", 10_000, lines.append, tty=False, every_s=0.0)
    progress.update(1)
    progress.update(2)
    assert len(lines) == 3  # the announcement, then a line per update: the time limit (0 s here) passed


def test_a_terminal_gets_a_bar_not_lines():
    lines: list[str] = []
    stream = io.StringIO()
    with FrameProgress("frames", 5, lines.append, stream=stream, tty=True) as progress:
        for done in range(1, 6):
            progress.update(done)
    bar = stream.getvalue()
    assert lines == [] and "frames:" in bar and "/5 [" in bar and "frame/s" in bar  # tqdm: rate and ETA in the bar
