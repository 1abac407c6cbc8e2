import pickle

import pytest

from ops.tracking.errors import TrackingError
from ops.tracking.frame_files import list_frames, require_matching_frames


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_frames_sorted_numerically_with_and_without_zero_padding(tmp_path):
    touch(
        tmp_path,
        "frame_10.npz",
        "frame_2.npz",
        "frame_000.npz",
        "frame_1.npz",
        *[f"frame_{n:03d}.npz" for n in range(3, 10)],
    )
    frames = list_frames(tmp_path, ".npz")
    assert [n for n, _ in frames] == list(range(11))
    assert frames[0][1] == tmp_path / "frame_000.npz"
    assert frames[10][1] == tmp_path / "frame_10.npz"


def test_frames_may_start_after_zero(tmp_path):
    touch(tmp_path, "frame_5.ply", "frame_6.ply", "frame_7.ply")
    assert [n for n, _ in list_frames(tmp_path, ".ply")] == [5, 6, 7]


def test_unrelated_hidden_and_temp_files_are_ignored(tmp_path):
    touch(
        tmp_path,
        "frame_0.npz", "frame_1.npz",
        "notes.txt", "frame_x.npz", "frame_2.npz.tmp", "frame_3.ply",
        ".frame_4.npz", "._frame_5.npz", "~frame_6.npz", "frame_-1.npz",
    )  # fmt: skip
    (tmp_path / "frame_7.npz").mkdir()
    assert [p.name for _, p in list_frames(tmp_path, ".npz")] == ["frame_0.npz", "frame_1.npz"]


def test_missing_folder(tmp_path):
    with pytest.raises(TrackingError, match="folder is missing") as error:
        list_frames(tmp_path / "nphm_expressions", ".npz")
    assert "nphm_expressions" in str(error.value)


def test_folder_that_is_a_file(tmp_path):
    touch(tmp_path, "nphm_expressions")
    with pytest.raises(TrackingError, match="not a directory"):
        list_frames(tmp_path / "nphm_expressions", ".npz")


def test_no_frames(tmp_path):
    touch(tmp_path, "readme.txt", ".frame_0.npz")
    with pytest.raises(TrackingError, match=r"no frame_<n>\.npz files") as error:
        list_frames(tmp_path, ".npz")
    assert str(tmp_path) in str(error.value)


def test_duplicate_frame_numbers_name_both_files(tmp_path):
    touch(tmp_path, "frame_0.npz", "frame_1.npz", "frame_001.npz", "frame_2.npz")
    with pytest.raises(TrackingError, match="duplicate frame numbers") as error:
        list_frames(tmp_path, ".npz")
    assert "frame_001.npz and frame_1.npz" in str(error.value)
    assert str(tmp_path) in str(error.value)


def test_gaps_list_the_first_missing_numbers(tmp_path):
    touch(tmp_path, *[f"frame_{n}.npz" for n in (2, 3, 6, 7, 30)])
    with pytest.raises(TrackingError, match="gap in frame numbers") as error:
        list_frames(tmp_path, ".npz")
    message = str(error.value)
    assert "24 missing between frame 2 and frame 30" in message
    assert "first missing: 4, 5, 8, 9, 10, 11, 12, 13, 14, 15" in message
    assert str(tmp_path) in message


def test_require_matching_frames(tmp_path):
    require_matching_frames(tmp_path, [3, 4, 5], [3, 4, 5], "expressions")
    with pytest.raises(TrackingError, match="do not match expressions frames") as error:
        require_matching_frames(tmp_path, [3, 4, 5, 6], [2, 3, 4, 5], "expressions")
    assert "frames not in expressions: 6" in str(error.value)
    assert "frames missing here: 2" in str(error.value)


def test_tracking_error_keeps_path_and_problem_and_pickles(tmp_path):
    error = TrackingError(tmp_path / "frame_1.ply", "truncated body")
    assert isinstance(error, ValueError)
    assert str(error) == f"{tmp_path / 'frame_1.ply'}: truncated body"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.problem, str(copy)) == (error.path, error.problem, str(error))
