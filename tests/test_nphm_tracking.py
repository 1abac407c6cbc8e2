import io
import zipfile

import numpy as np
import pytest

from ops.tracking.errors import TrackingError
from ops.tracking.nphm import (
    EXPRESSION_KEYS,
    IDENTITY_KEYS,
    NPHM_EXPRESSIONS_DIR,
    read_nphm_expressions,
)

RNG = np.random.default_rng(0)
IDENTITY = RNG.standard_normal(1344).astype(np.float32)


def expressions_dir(seq):
    folder = seq / NPHM_EXPRESSIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_frames(seq, n_frames=4, first=0, save=np.savez, **extra):
    """Frames with expression + identity (+ `extra` arrays per frame); returns the expressions."""
    folder = expressions_dir(seq)
    codes = RNG.standard_normal((n_frames, 200)).astype(np.float32)
    for row in range(n_frames):
        arrays = {"expression": codes[row], "identity": IDENTITY, **{k: v[row] for k, v in extra.items()}}
        save(folder / f"frame_{first + row}.npz", **arrays)
    return codes


def frame_path(seq, number):
    return seq / NPHM_EXPRESSIONS_DIR / f"frame_{number}.npz"


def expect_error(seq, number, match):
    with pytest.raises(TrackingError, match=match) as error:
        read_nphm_expressions(seq)
    assert str(frame_path(seq, number)) in str(error.value)
    return str(error.value)


def test_reads_codes_identity_and_frame_numbers(tmp_path):
    codes = write_frames(tmp_path, n_frames=5, first=3)
    tracking = read_nphm_expressions(tmp_path)
    np.testing.assert_array_equal(tracking.expression, codes)
    np.testing.assert_array_equal(tracking.identity, IDENTITY)
    assert tracking.expression.dtype == tracking.identity.dtype == np.float32
    assert tracking.pose is None and tracking.pose_keys == ()
    np.testing.assert_array_equal(tracking.frame_numbers, [3, 4, 5, 6, 7])
    assert tracking.source_files[0] == frame_path(tmp_path, 3)
    assert len(tracking) == 5


def test_same_result_as_np_load_for_compressed_and_float64_frames(tmp_path):
    folder = expressions_dir(tmp_path)
    expected = []
    for row, save in enumerate([np.savez, np.savez_compressed, np.savez_compressed]):
        code = RNG.standard_normal(200)  # float64 on disk
        save(folder / f"frame_{row}.npz", z_exp=code.reshape(1, 200), z_id=IDENTITY.astype(">f4"))
        with np.load(folder / f"frame_{row}.npz") as npz:
            expected.append(npz["z_exp"][0].astype(np.float32))
    tracking = read_nphm_expressions(tmp_path)
    np.testing.assert_array_equal(tracking.expression, expected)
    np.testing.assert_array_equal(tracking.identity, IDENTITY)


@pytest.mark.parametrize("expression_key", EXPRESSION_KEYS)
@pytest.mark.parametrize("identity_key", IDENTITY_KEYS)
def test_key_name_variants(tmp_path, expression_key, identity_key):
    folder = expressions_dir(tmp_path)
    codes = RNG.standard_normal((2, 200)).astype(np.float32)
    for row in range(2):
        np.savez(folder / f"frame_{row}.npz", **{expression_key: codes[row], identity_key: IDENTITY})
    tracking = read_nphm_expressions(tmp_path)
    np.testing.assert_array_equal(tracking.expression, codes)
    np.testing.assert_array_equal(tracking.identity, IDENTITY)


@pytest.mark.parametrize("shape", [(200,), (1, 200), (1, 1, 200)])
def test_leading_singleton_dims_are_squeezed(tmp_path, shape):
    folder = expressions_dir(tmp_path)
    codes = RNG.standard_normal((3, 200)).astype(np.float32)
    for row in range(3):
        np.savez(
            folder / f"frame_{row}.npz", lat_rep_expr=codes[row].reshape(shape), lat_rep_id=IDENTITY.reshape(1, 1, -1)
        )
    np.testing.assert_array_equal(read_nphm_expressions(tmp_path).expression, codes)


def test_fortran_ordered_pose_matrix(tmp_path):
    rotations = np.asfortranarray(RNG.standard_normal((2, 3, 3)).astype(np.float32))
    write_frames(tmp_path, n_frames=2, pose=np.stack([np.asfortranarray(r) for r in rotations]))
    tracking = read_nphm_expressions(tmp_path)
    np.testing.assert_array_equal(tracking.pose, rotations.reshape(2, 9))
    assert tracking.pose_keys == ("pose",)


def test_rot_trans_scale_are_concatenated_in_order(tmp_path):
    rot = RNG.standard_normal((3, 1, 3)).astype(np.float32)
    trans = RNG.standard_normal((3, 3)).astype(np.float32)
    scale = RNG.random((3, 1)).astype(np.float32)
    write_frames(tmp_path, n_frames=3, rot=rot, trans=trans, scale=scale)
    tracking = read_nphm_expressions(tmp_path)
    assert tracking.pose_keys == ("rot", "trans", "scale")
    np.testing.assert_array_equal(tracking.pose, np.concatenate([rot[:, 0], trans, scale], axis=1))


def test_identity_is_optional(tmp_path):
    folder = expressions_dir(tmp_path)
    for row in range(2):
        np.savez(folder / f"frame_{row}.npz", expr=np.zeros(200, np.float32), rot=np.zeros(3, np.float32))
    tracking = read_nphm_expressions(tmp_path)
    assert tracking.identity is None and tracking.pose.shape == (2, 3)


def test_identity_within_rounding_is_one_identity(tmp_path):
    write_frames(tmp_path, n_frames=2)
    np.savez(
        frame_path(tmp_path, 1), expression=np.zeros(200, np.float32), identity=IDENTITY.astype(np.float64) * (1 + 1e-7)
    )
    np.testing.assert_array_equal(read_nphm_expressions(tmp_path).identity, IDENTITY)


def test_custom_code_sizes(tmp_path):
    folder = expressions_dir(tmp_path)
    np.savez(folder / "frame_0.npz", expression=np.ones(100, np.float32), identity=np.ones(64, np.float32))
    tracking = read_nphm_expressions(tmp_path, expression_dim=100, identity_dim=64)
    assert tracking.expression.shape == (1, 100) and tracking.identity.shape == (64,)


# ----------------------------------------------------------------------------- errors


def test_missing_expression_key_lists_keys_found(tmp_path):
    write_frames(tmp_path, n_frames=3)
    np.savez(frame_path(tmp_path, 2), latent=np.zeros(200, np.float32), identity=IDENTITY)
    message = expect_error(tmp_path, 2, "no expression code")
    assert "keys found: identity, latent" in message


def test_ambiguous_keys(tmp_path):
    expressions_dir(tmp_path)
    np.savez(frame_path(tmp_path, 0), expr=np.zeros(200, np.float32), z_exp=np.zeros(200, np.float32))
    expect_error(tmp_path, 0, "ambiguous expression code: several of expr, z_exp present")
    np.savez(
        frame_path(tmp_path, 0),
        expr=np.zeros(200, np.float32),
        pose=np.zeros(6, np.float32),
        rot=np.zeros(3, np.float32),
    )
    expect_error(tmp_path, 0, "ambiguous pose")


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"expression": np.zeros(199, np.float32)}, r"'expression' has shape \(199,\); expected \(200,\)"),
        ({"expression": np.zeros((200, 1), np.float32)}, r"'expression' has shape \(200, 1\)"),
        ({"expression": np.zeros((2, 200), np.float32)}, r"'expression' has shape \(2, 200\)"),
        (
            {"expression": np.zeros(200, np.float32), "identity": np.zeros(1343, np.float32)},
            r"'identity' has shape \(1343,\); expected \(1344,\)",
        ),
        ({"expression": np.zeros(200, np.int32)}, "'expression' has dtype int32; expected a float array"),
        ({"expression": np.zeros(200, bool)}, "'expression' has dtype bool"),
        ({"expression": np.zeros(200, np.float32), "rot": np.zeros(3, np.int64)}, "'rot' has dtype int64"),
    ],
)
def test_bad_code_arrays(tmp_path, arrays, match):
    expressions_dir(tmp_path)
    np.savez(frame_path(tmp_path, 0), **{"identity": IDENTITY, **arrays})
    expect_error(tmp_path, 0, match)


def test_object_arrays_are_never_unpickled(tmp_path):
    write_frames(tmp_path, n_frames=2)
    np.savez(frame_path(tmp_path, 1), expression=np.array([{"code": 1}], dtype=object), identity=IDENTITY)
    expect_error(tmp_path, 1, "'expression' is an object array \\(pickled\\); not allowed")


@pytest.mark.parametrize("field", ["expression", "identity"])
def test_nan_and_inf_name_the_frame(tmp_path, field):
    write_frames(tmp_path, n_frames=4)
    code = np.zeros(200 if field == "expression" else 1344, np.float32)
    code[5] = np.nan if field == "expression" else np.inf
    arrays = {"expression": np.zeros(200, np.float32), "identity": IDENTITY, field: code}
    np.savez(frame_path(tmp_path, 2), **arrays)
    expect_error(tmp_path, 2, f"{field} code contains NaN or Inf")


def test_changing_identity_is_an_error(tmp_path):
    write_frames(tmp_path, n_frames=4)
    np.savez(frame_path(tmp_path, 3), expression=np.zeros(200, np.float32), identity=IDENTITY + 0.01)
    message = expect_error(tmp_path, 3, "identity code differs from frame_0.npz")
    assert "single identity" in message


def test_frames_must_carry_the_same_codes(tmp_path):
    write_frames(tmp_path, n_frames=3)
    np.savez(frame_path(tmp_path, 1), expression=np.zeros(200, np.float32))
    expect_error(tmp_path, 1, "holds expression but frame_0.npz holds expression, identity")
    write_frames(tmp_path, n_frames=2, rot=np.zeros((2, 3), np.float32))
    np.savez(
        frame_path(tmp_path, 1), expression=np.zeros(200, np.float32), identity=IDENTITY, rot=np.zeros(6, np.float32)
    )
    expect_error(tmp_path, 1, "pose \\(rot\\) has 6 values, frame_0.npz has 3")


def test_gaps_and_duplicates_come_from_the_listing(tmp_path):
    write_frames(tmp_path, n_frames=3)
    frame_path(tmp_path, 1).rename(frame_path(tmp_path, 9))
    with pytest.raises(TrackingError, match="first missing: 1, 3, 4"):
        read_nphm_expressions(tmp_path)
    frame_path(tmp_path, 9).rename(tmp_path / NPHM_EXPRESSIONS_DIR / "frame_01.npz")
    np.savez(frame_path(tmp_path, 1), expression=np.zeros(200, np.float32))
    with pytest.raises(TrackingError, match="duplicate frame numbers: frame_01.npz and frame_1.npz"):
        read_nphm_expressions(tmp_path)
    with pytest.raises(TrackingError, match="folder is missing"):
        read_nphm_expressions(tmp_path / "other")


def corrupt_payload(data: bytes) -> bytes:
    """Flip a byte inside the stored expression values (zip structure intact, CRC now wrong)."""
    start = data.index(b"\x93NUMPY") + 128 + 40
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1 :]


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda data: data[: len(data) // 2], "not a readable npz/zip file"),
        (lambda data: b"\x00" * len(data), "not a readable npz/zip file"),
        (lambda data: b"", "not a readable npz/zip file"),
        (corrupt_payload, "corrupt npz member 'expression'"),
    ],
)
def test_corrupt_npz(tmp_path, damage, match):
    write_frames(tmp_path, n_frames=3)
    path = frame_path(tmp_path, 1)
    path.write_bytes(damage(path.read_bytes()))
    expect_error(tmp_path, 1, match)


def test_zip_written_as_a_stream_goes_through_the_fallback(tmp_path):
    write_frames(tmp_path, n_frames=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = b"written with data descriptors"
        for key, value in {"expression": np.arange(200, dtype=np.float32), "identity": IDENTITY}.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, value)
            archive.writestr(key + ".npy", member.getvalue())
    frame_path(tmp_path, 1).write_bytes(b"prefix" + buffer.getvalue())  # offsets now off by 6
    np.testing.assert_array_equal(read_nphm_expressions(tmp_path).expression[1], np.arange(200))


def test_plain_and_compressed_npz_take_the_fast_reader(tmp_path):
    from ops.tracking.nphm import _open_npz

    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, expression=np.arange(200, dtype=np.float32))
        archive = _open_npz(path)
        assert archive.members is not None  # parsed without zipfile
        np.testing.assert_array_equal(archive.read("expression"), np.arange(200))
