"""Crafted bad input files for the hardening tests: each builder writes one file broken in one way.

They work on sequences written by `tests.builders.write_sequence` (frames `frame_0000` ...,
36-vertex grid meshes) and overwrite a single file in place, so a test reads as
"a good sequence, except this one file".
"""

from __future__ import annotations

import builtins
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import soundfile

from tests.builders import grid_mesh, speech_like

AUDIO = Path("audio") / "cleaned_audio.wav"
PICKLED_FEATURES = Path("audio") / "wave2vec_audio_feats.pkl"
NPHM_EXPRESSIONS = Path("nphm_tracking") / "nphm_expressions"
NPHM_MESHES = Path("nphm_tracking") / "nphm_meshes"
FLAME_TEMPLATE = Path("flame_2023_tracking") / "flame_2023_template.ply"
FLAME_MESHES = Path("flame_2023_tracking") / "flame_meshes"


def frame(folder: Path, number: int, suffix: str) -> Path:
    """The file of frame `number` as `write_sequence` names it."""
    return Path(folder) / f"frame_{number:04d}{suffix}"


# ------------------------------------------------------------------------------------------ bytes


def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    """Cut a file short, as an interrupted copy would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def write_empty(path: Path) -> None:
    Path(path).write_bytes(b"")


def write_garbage(path: Path, size: int = 600, seed: int = 0) -> None:
    """Random bytes: no magic number, no structure."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())


def write_text(path: Path) -> None:
    """Plain text under an audio or mesh file name (a mislabelled export)."""
    Path(path).write_text("this is a transcript, not a recording\n" * 20)


# ------------------------------------------------------------------------------------------ audio


def write_silent_wav(path: Path, seconds: float, rate: int = 16_000) -> None:
    soundfile.write(path, np.zeros(int(seconds * rate), np.float32), rate, subtype="PCM_16")


def write_clipped_wav(path: Path, seconds: float, rate: int = 16_000) -> None:
    """Speech driven ten times past full scale, as a recording with the gain set too high."""
    loud = np.clip(10.0 * speech_like(seconds, rate), -1.0, 1.0)
    soundfile.write(path, loud, rate, subtype="PCM_16")


def write_nan_wav(path: Path, seconds: float, rate: int = 16_000) -> None:
    """A float WAV with a NaN sample in it (a broken resampler's output)."""
    samples = speech_like(seconds, rate)
    samples[len(samples) // 3] = np.nan
    soundfile.write(path, samples, rate, subtype="FLOAT")


def write_very_long_wav(path: Path, seconds: float = 1300.0) -> None:
    """A genuinely long recording kept tiny on disk: `seconds` of 8-bit audio at 8 samples per second."""
    rate = 8
    samples = 0.1 * np.sin(np.arange(int(seconds * rate)) * 0.7)
    soundfile.write(path, samples.astype(np.float32), rate, subtype="PCM_U8")


def write_wav_claiming_huge_length(path: Path, rate: int = 16_000) -> None:
    """A short WAV whose RIFF and data sizes claim ~4 GiB of samples."""
    soundfile.write(path, speech_like(1.0, rate), rate, subtype="PCM_16")
    data = bytearray(Path(path).read_bytes())
    chunk = data.find(b"data")
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    data[chunk + 4 : chunk + 8] = struct.pack("<I", 0xFFFFFFE0)
    Path(path).write_bytes(bytes(data))


# -------------------------------------------------------------------------------------------- npz


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """An npz with exactly these members."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def rewrite_npz(path: Path, drop: tuple[str, ...] = (), **members: np.ndarray) -> None:
    """Keep a frame's other members (its identity code), replace or drop the named ones."""
    with np.load(path) as existing:
        kept = {name: existing[name] for name in existing.files if name not in drop}
    write_npz(path, **{**kept, **members})


def write_object_npz(path: Path) -> None:
    """An npz whose expression is an object array: loading it would need pickle."""
    code = np.empty(200, dtype=object)
    code[:] = [0.0] * 200
    rewrite_npz(path, expression=code)


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_npz_claiming_huge_array(path: Path, shape: tuple[int, ...] = (10**10,)) -> None:
    """An npz whose expression header declares 40 GB of float32 but holds 800 bytes (no identity:
    put it on a sequence's first frame, which sets the layout the others must follow)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("expression.npy", _npy_header(shape) + bytes(800))


def write_npz_zip_bomb(path: Path, inflated_bytes: int = 65 << 20) -> None:
    """A ~65 KB npz whose expression member inflates to `inflated_bytes` of zeros (first frame only)."""
    chunk = bytes(8 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("expression.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((inflated_bytes // 4,)))
            for _ in range(inflated_bytes // len(chunk)):
                member.write(chunk)
            member.write(bytes(inflated_bytes % len(chunk)))


# -------------------------------------------------------------------------------------------- PLY


def _ply_header(fmt: str, n_vertices: int, n_faces: int) -> str:
    return (
        f"ply\nformat {fmt} 1.0\ncomment written by tests.bad_inputs\n"
        f"element vertex {n_vertices}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {n_faces}\nproperty list uchar int vertex_indices\nend_header\n"
    )


def write_ascii_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """An ASCII PLY of the same mesh (valid; some exporters write only this)."""
    lines = [" ".join(f"{c:.9g}" for c in v) for v in np.asarray(vertices, np.float32)]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    Path(path).write_text(_ply_header("ascii", len(vertices), len(faces)) + "\n".join(lines) + "\n")


def write_big_endian_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A binary big-endian PLY of the same mesh (valid; written by some SGI-era tools)."""
    rows = np.empty(len(faces), dtype=[("count", "u1"), ("indices", ">i4", (3,))])
    rows["count"], rows["indices"] = 3, faces
    body = np.ascontiguousarray(vertices, dtype=">f4").tobytes() + rows.tobytes()
    Path(path).write_bytes(_ply_header("binary_big_endian", len(vertices), len(faces)).encode() + body)


def write_nan_ply(path: Path) -> None:
    """The grid mesh with one NaN coordinate (patched in: ops.tracking.ply.write_ply refuses to write NaN)."""
    vertices, faces = grid_mesh()
    vertices[5, 0] = np.nan
    Path(path).write_bytes(_binary_ply(vertices, faces))


def _binary_ply(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    rows = np.empty(len(faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    rows["count"], rows["indices"] = 3, faces
    header = _ply_header("binary_little_endian", len(vertices), len(faces)).encode()
    return header + np.ascontiguousarray(vertices, dtype="<f4").tobytes() + rows.tobytes()


def write_other_topology_ply(path: Path, grid: int = 5) -> None:
    """A valid mesh of another topology (a grid x grid surface instead of the 6 x 6 one)."""
    Path(path).write_bytes(_binary_ply(*grid_mesh(grid)))


def write_reordered_faces_ply(path: Path) -> None:
    """Same vertex count as the template but other faces (tracked on another template)."""
    vertices, faces = grid_mesh()
    Path(path).write_bytes(_binary_ply(vertices, faces[:, ::-1].copy()))


def write_ply_claiming_faces(path: Path, n_faces: int = 4_000_000_000) -> None:
    """The grid mesh under a header that declares `n_faces` faces (a 1 KB file claiming 50 GB)."""
    vertices, faces = grid_mesh()
    data = _binary_ply(vertices, faces)
    Path(path).write_bytes(data.replace(f"element face {len(faces)}\n".encode(), f"element face {n_faces}\n".encode()))


def write_out_of_range_faces_ply(path: Path) -> None:
    vertices, faces = grid_mesh()
    faces = faces.copy()
    faces[3, 1] = 10_000
    Path(path).write_bytes(_binary_ply(vertices, faces))


# ----------------------------------------------------------------------------------------- pickle


class _CreatesFile:
    """Unpickling this object opens (creates) `marker`: what a hostile features file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def write_malicious_pickle(path: Path, marker: Path) -> None:
    """A `.pkl` that creates `marker` when passed to pickle.load."""
    Path(path).write_bytes(pickle.dumps(_CreatesFile(marker)))
