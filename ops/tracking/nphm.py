"""Readers for NPHM tracking output: per-frame latent codes (npz); the meshes: `mesh_index.py`.

Layout inside a sequence folder:

    nphm_tracking/nphm_expressions/frame_<n>.npz   expression code [200] (+ identity [1344], pose)
    nphm_tracking/nphm_meshes/frame_<n>.ply         marching-cubes mesh; topology varies per frame

Tracking tools differ in key names and in how many singleton dimensions they keep, so the
reader accepts the common aliases (EXPRESSION_KEYS, IDENTITY_KEYS, POSE_KEY / POSE_PART_KEYS) and
squeezes leading singleton dimensions ([1, 1, 200] -> [200]); anything else is an error that
names the file and lists the keys it holds.

A sequence has one identity. Trackers store the same identity code in every frame; a frame whose
identity differs from the first frame's by more than a float rounding tolerance is an error
(rather than silently keeping the first), because it means frames of two people were mixed.

Speed: np.load costs ~1 ms per small npz here (zipfile + format parsing in Python). Frames are
read with a minimal zip reader instead: one file read, the central directory parsed with struct,
members sliced (stored) or inflated (deflated) and CRC-checked, the .npy header parsed once per
distinct header text. Anything unusual (zip64, encryption, odd methods, a failed check) goes
through `zipfile` + `np.lib.format.read_array(allow_pickle=False)`, which also words the error.
"""

from __future__ import annotations

import ast
import functools
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ops.tracking.errors import TrackingError
from ops.tracking.frame_files import list_frames

__all__ = [
    "EXPRESSION_KEYS",
    "IDENTITY_KEYS",
    "NPHM_EXPRESSIONS_DIR",
    "NPHM_MESHES_DIR",
    "POSE_KEY",
    "POSE_PART_KEYS",
    "NphmTracking",
    "read_nphm_expressions",
]

NPHM_EXPRESSIONS_DIR = Path("nphm_tracking") / "nphm_expressions"
NPHM_MESHES_DIR = Path("nphm_tracking") / "nphm_meshes"

EXPRESSION_KEYS = ("expression", "expr", "z_exp", "lat_rep_expr", "lat_reps_expr", "expression_code")
IDENTITY_KEYS = ("identity", "z_id", "z_geo", "lat_rep_id", "lat_reps_id", "lat_rep_geo", "identity_code")
POSE_KEY = "pose"
POSE_PART_KEYS = ("rot", "trans", "scale")  # concatenated in this order when `pose` is absent

# Identity codes of one sequence must agree to float32 rounding (they are copies of one code).
IDENTITY_RTOL = 1e-5
IDENTITY_ATOL = 1e-6


@dataclass(frozen=True)
class NphmTracking:
    expression: np.ndarray  # [T, expression_dim] float32
    identity: np.ndarray | None  # [identity_dim] float32, None when frames carry none
    pose: np.ndarray | None  # [T, k] float32, None when frames carry none
    pose_keys: tuple[str, ...]  # npz keys that make up `pose`, in column order
    frame_numbers: np.ndarray  # [T] int64, consecutive
    source_files: tuple[Path, ...]  # [T]

    def __len__(self) -> int:
        return len(self.expression)


# ----------------------------------------------------------------------------- expressions


def read_nphm_expressions(
    seq_dir: str | Path,
    expression_dim: int = 200,
    identity_dim: int = 1344,
) -> NphmTracking:
    """Read every `nphm_tracking/nphm_expressions/frame_<n>.npz` of a sequence folder."""
    folder = Path(seq_dir) / NPHM_EXPRESSIONS_DIR
    frames = list_frames(folder, ".npz")
    n_frames = len(frames)
    expression = np.empty((n_frames, expression_dim), dtype=np.float32)
    identity = None  # the first frame's; every later frame is compared with it as it is read
    has_identity = False
    poses = None
    first_layout = None
    first_path = frames[0][1]
    for row, (_, path) in enumerate(frames):
        archive = _open_npz(path)
        layout = _resolve_keys(path, archive.names)
        if first_layout is None:
            first_layout = layout
            has_identity = layout.identity is not None
        elif (layout.identity is None) != (first_layout.identity is None) or layout.pose != first_layout.pose:
            raise TrackingError(
                path,
                f"holds {layout.describe()} but {first_path.name} holds {first_layout.describe()}; "
                "all frames of a sequence must carry the same codes",
            )
        expression[row] = _code(archive, path, layout.expression, expression_dim)
        if has_identity:
            code = _code(archive, path, layout.identity, identity_dim)
            if identity is None:
                _require_finite_rows(code[None], [path], "identity code")
                identity = code.astype(np.float32)
            else:
                _require_same_identity(identity, code, path, first_path)
        if layout.pose:
            pose = np.concatenate([_float_array(archive, path, key).ravel() for key in layout.pose])
            if poses is None:
                poses = np.empty((n_frames, pose.size), dtype=np.float32)
            elif pose.size != poses.shape[1]:
                raise TrackingError(
                    path,
                    f"pose ({'+'.join(layout.pose)}) has {pose.size} values, {first_path.name} has {poses.shape[1]}",
                )
            poses[row] = pose

    paths = [path for _, path in frames]
    _require_finite_rows(expression, paths, "expression code")
    if poses is not None:
        _require_finite_rows(poses, paths, "pose")
    return NphmTracking(
        expression=expression,
        identity=identity,
        pose=poses,
        pose_keys=first_layout.pose,
        frame_numbers=np.array([n for n, _ in frames], dtype=np.int64),
        source_files=tuple(paths),
    )


@dataclass(frozen=True)
class _KeyLayout:
    expression: str
    identity: str | None
    pose: tuple[str, ...]

    def describe(self) -> str:
        parts = ["expression"]
        if self.identity is not None:
            parts.append("identity")
        if self.pose:
            parts.append(f"pose ({'+'.join(self.pose)})")
        return ", ".join(parts)


@functools.lru_cache(maxsize=64)
def _layout_for(names: tuple[str, ...]) -> _KeyLayout | str:
    """Which keys hold which code; a string is the problem when the names do not fit."""
    present = set(names)
    expression = [k for k in EXPRESSION_KEYS if k in present]
    identity = [k for k in IDENTITY_KEYS if k in present]
    parts = tuple(k for k in POSE_PART_KEYS if k in present)
    found = f"keys found: {', '.join(sorted(names)) or '(none)'}"
    if not expression:
        return f"no expression code (expected one of {', '.join(EXPRESSION_KEYS)}); {found}"
    for role, keys in (("expression", expression), ("identity", identity)):
        if len(keys) > 1:
            return f"ambiguous {role} code: several of {', '.join(keys)} present; {found}"
    if POSE_KEY in present and parts:
        return f"ambiguous pose: both {POSE_KEY!r} and {', '.join(parts)} present; {found}"
    pose = (POSE_KEY,) if POSE_KEY in present else parts
    return _KeyLayout(expression[0], identity[0] if identity else None, pose)


def _resolve_keys(path: Path, names: tuple[str, ...]) -> _KeyLayout:
    layout = _layout_for(names)
    if isinstance(layout, str):
        raise TrackingError(path, layout)
    return layout


def _float_array(archive: _Npz, path: Path, key: str) -> np.ndarray:
    array = archive.read(key)
    if array.dtype.kind != "f":
        raise TrackingError(path, f"{key!r} has dtype {array.dtype}; expected a float array")
    return array


def _code(archive: _Npz, path: Path, key: str, dim: int) -> np.ndarray:
    """A latent code as [dim], accepting [1, dim], [1, 1, dim], ... (leading singletons)."""
    array = _float_array(archive, path, key)
    code = array
    while code.ndim > 1 and code.shape[0] == 1:
        code = code[0]
    if code.shape != (dim,):
        raise TrackingError(path, f"{key!r} has shape {array.shape}; expected ({dim},) or with leading 1s")
    return code


def _require_finite_rows(values: np.ndarray, paths: list[Path], what: str) -> None:
    if np.isfinite(values).all():
        return
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    raise TrackingError(paths[bad[0]], f"{what} contains NaN or Inf ({len(bad)} frames affected)")


def _require_same_identity(reference: np.ndarray, code: np.ndarray, path: Path, first_path: Path) -> None:
    """One frame's identity against the first frame's (frames are checked as they are read)."""
    if not np.isfinite(code).all():
        _require_finite_rows(code[None], [path], "identity code")
    difference = np.abs(code - reference)
    if (difference <= IDENTITY_ATOL + IDENTITY_RTOL * np.abs(reference)).all():
        return
    raise TrackingError(
        path,
        f"identity code differs from {first_path.name} (max abs difference "
        f"{difference.max():.3g}); a sequence must have a single identity",
    )


# ----------------------------------------------------------------------------- npz files

_LOCAL_NAME_EXTRA = struct.Struct("<HH")  # name and extra-field lengths at offset 26 of a local header
_CENTRAL_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_END_RECORD = struct.Struct("<4sHHHHIIH")  # 22 bytes
_NPY_MAGIC = b"\x93NUMPY"
# A frame's codes are kilobytes. Members are inflated at most this far, so a small file that
# inflates to gigabytes (a zip bomb) or declares a huge array fails on its own, not by OOM-kill.
MAX_MEMBER_BYTES = 64 << 20


class _Npz:
    """Lazy view of an npz: member names (without .npy) and arrays decoded on demand."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.data = data
        self.members = _central_directory(data)  # None when only zipfile can read it
        if self.members is None:
            self.names = self._fallback_names()
        else:
            self.names = tuple(sorted(name[:-4] for name in self.members if name.endswith(".npy")))

    def read(self, key: str) -> np.ndarray:
        if self.members is not None:
            array = _fast_member(self.data, self.members.get(key + ".npy"))
            if array is not None:
                return array
        return self._fallback_read(key)

    def _fallback_names(self) -> tuple[str, ...]:
        with self._zip() as archive:
            return tuple(sorted(n[:-4] for n in archive.namelist() if n.endswith(".npy")))

    def _fallback_read(self, key: str) -> np.ndarray:
        with self._zip() as archive:
            try:
                with archive.open(key + ".npy") as member:
                    data = member.read(MAX_MEMBER_BYTES + 1)
                if len(data) > MAX_MEMBER_BYTES:
                    raise TrackingError(
                        self.path, f"{key!r} inflates to more than {MAX_MEMBER_BYTES} bytes; not a frame's code"
                    )
                return _read_npy(self.path, key, data)
            except TrackingError:
                raise
            except ValueError as error:
                if "allow_pickle" in str(error) or "Object arrays" in str(error):
                    raise TrackingError(self.path, f"{key!r} is an object array (pickled); not allowed") from None
                raise TrackingError(self.path, f"{key!r} is not a valid .npy member ({error})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as error:
                raise TrackingError(self.path, f"corrupt npz member {key!r} ({error})") from None

    def _zip(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(io.BytesIO(self.data))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise TrackingError(self.path, f"not a readable npz/zip file ({error})") from None


def _read_npy(path: Path, key: str, data: bytes) -> np.ndarray:
    """An .npy member whose header is checked against its size before numpy allocates the array."""
    buffer = io.BytesIO(data)
    version = np.lib.format.read_magic(buffer)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(buffer)
    if not dtype.hasobject:  # object arrays: read_array(allow_pickle=False) refuses them below
        needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        held = len(data) - buffer.tell()
        if needed != held:
            raise TrackingError(path, f"{key!r} declares shape {shape} ({needed} bytes) but holds {held} bytes")
    buffer.seek(0)
    return np.lib.format.read_array(buffer, allow_pickle=False)


def _open_npz(path: Path) -> _Npz:
    try:
        with open(path, "rb", buffering=0) as file:
            data = file.read()
    except OSError as error:
        raise TrackingError(path, f"cannot read file ({error.strerror or error})") from None
    return _Npz(path, data)


def _central_directory(data: bytes) -> dict[str, tuple[int, int, int, int, int]] | None:
    """name -> (local header offset, method, compressed size, size, crc); None to fall back."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if end < 0 or end + _END_RECORD.size > len(data):
        return None
    _, disk, _, _, count, size, offset, _ = _END_RECORD.unpack_from(data, end)
    if disk != 0 or count == 0xFFFF or offset == 0xFFFFFFFF or offset + size > end:
        return None  # multi-disk or zip64: leave it to zipfile
    members = {}
    position = offset
    unpack = _CENTRAL_HEADER.unpack_from
    for _ in range(count):
        if position + 46 > end:
            return None
        (signature, _, _, flags, method, _, _, crc, packed, unpacked,
         name_length, extra_length, comment_length, _, _, _, local) = unpack(data, position)  # fmt: skip
        if signature != b"PK\x01\x02" or flags & 0x1 or method not in (0, 8) or 0xFFFFFFFF in (packed, unpacked, local):
            return None  # encrypted, unusual compression or zip64 sizes
        name = data[position + 46 : position + 46 + name_length].decode("utf-8" if flags & 0x800 else "cp437")
        members[name] = (local, method, packed, unpacked, crc)
        position += 46 + name_length + extra_length + comment_length
    return members


def _fast_member(data: bytes, member: tuple[int, int, int, int, int] | None) -> np.ndarray | None:
    """Decode one .npy member; None when anything is off (the caller falls back to zipfile)."""
    if member is None:
        return None
    local, method, packed, unpacked, crc = member
    if local + 30 > len(data) or data[local : local + 4] != b"PK\x03\x04":
        return None
    name_length, extra_length = _LOCAL_NAME_EXTRA.unpack_from(data, local + 26)
    start = local + 30 + name_length + extra_length
    raw = memoryview(data)[start : start + packed]  # a view: stored members are not copied
    if len(raw) != packed:
        return None
    if unpacked > MAX_MEMBER_BYTES:
        return None  # the fallback refuses it with a message
    if method == 8:
        try:
            raw = zlib.decompressobj(-15).decompress(raw, unpacked + 1)  # bounded, whatever the stream holds
        except zlib.error:
            return None
    if len(raw) != unpacked or zlib.crc32(raw) != crc:
        return None
    return _npy_from_bytes(raw)


def _npy_from_bytes(raw) -> np.ndarray | None:
    if len(raw) < 10 or raw[:6] != _NPY_MAGIC:
        return None
    major = raw[6]
    if major == 1:
        header_length, header_start = raw[8] | raw[9] << 8, 10
    elif major in (2, 3) and len(raw) >= 12:
        header_length, header_start = struct.unpack_from("<I", raw, 8)[0], 12
    else:
        return None
    parsed = _npy_header(bytes(raw[header_start : header_start + header_length]))
    if parsed is None:
        return None
    dtype, fortran_order, shape, count = parsed
    offset = header_start + header_length
    if len(raw) - offset != count * dtype.itemsize:
        return None
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    if len(shape) == 1:
        return array
    return array.reshape(shape, order="F" if fortran_order else "C")


@functools.lru_cache(maxsize=256)
def _npy_header(text: bytes) -> tuple[np.dtype, bool, tuple[int, ...], int] | None:
    """Parse an .npy header dict (literal_eval: no code runs); cached, frames share headers."""
    try:
        header = ast.literal_eval(text.decode("latin1"))
        dtype = np.dtype(header["descr"])
        shape = tuple(int(n) for n in header["shape"])
        fortran_order = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        return None
    if dtype.hasobject or any(n < 0 for n in shape):
        return None  # object arrays: zipfile + read_array(allow_pickle=False) reports them
    return dtype, fortran_order, shape, int(np.prod(shape, dtype=np.int64))
