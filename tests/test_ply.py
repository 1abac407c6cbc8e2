from pathlib import Path

import numpy as np
import pytest
import trimesh

from ops.tracking.errors import TrackingError
from ops.tracking.ply import read_ply, read_ply_vertices, write_ply
from tests.conftest import SHARED_DATA

SHARED_HEAD = SHARED_DATA / "nphm_template_flame_topology.ply"
NUMPY_TYPE = {
    "uchar": "u1",
    "char": "i1",
    "ushort": "u2",
    "short": "i2",
    "int": "i4",
    "uint": "u4",
    "float": "f4",
    "double": "f8",
}


@pytest.fixture(scope="module")
def head():
    """(vertices float64 [V,3], faces int64 [F,3]): the shared FLAME-topology head, else a sphere."""
    if SHARED_HEAD.exists():
        mesh = trimesh.load(SHARED_HEAD, process=False)
    else:
        mesh = trimesh.creation.icosphere(subdivisions=3)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def write_custom_ply(path, fmt, vertex_fields, polygons, count_type="uchar", index_type="int", face_extra=()):
    """Write any PLY layout: vertex_fields [(name, type, values[V])], polygons a list of index lists,
    face_extra [(name, type, values[F])] scalars written before the index list."""
    order = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "<"}[fmt]
    n_vertices = len(vertex_fields[0][2])
    lines = ["ply", f"format {fmt} 1.0", "comment written by test_ply", f"element vertex {n_vertices}"]
    lines += [f"property {ply_type} {name}" for name, ply_type, _ in vertex_fields]
    if polygons is not None:
        lines.append(f"element face {len(polygons)}")
        lines += [f"property {ply_type} {name}" for name, ply_type, _ in face_extra]
        lines.append(f"property list {count_type} {index_type} vertex_indices")
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")
    if fmt == "ascii":
        rows = [
            " ".join(
                repr(float(v)) if t in ("float", "double") else str(int(v))
                for _, t, values in vertex_fields
                for v in [values[i]]
            )
            for i in range(n_vertices)
        ]
        for f, polygon in enumerate(polygons or []):
            extra = [str(int(values[f])) for _, _, values in face_extra]
            rows.append(" ".join(extra + [str(len(polygon))] + [str(int(i)) for i in polygon]))
        Path(path).write_bytes(header + ("\n".join(rows) + "\n").encode("ascii"))
        return
    table = np.empty(n_vertices, dtype=[(name, order + NUMPY_TYPE[t]) for name, t, _ in vertex_fields])
    for name, _, values in vertex_fields:
        table[name] = values
    body = [table.tobytes()]
    for f, polygon in enumerate(polygons or []):
        for _, ply_type, values in face_extra:
            body.append(np.array([values[f]], dtype=order + NUMPY_TYPE[ply_type]).tobytes())
        body.append(np.array([len(polygon)], dtype=order + NUMPY_TYPE[count_type]).tobytes())
        body.append(np.asarray(polygon, dtype=order + NUMPY_TYPE[index_type]).tobytes())
    Path(path).write_bytes(header + b"".join(body))


def xyz_fields(vertices, ply_type="float"):
    return [(axis, ply_type, vertices[:, k]) for k, axis in enumerate("xyz")]


def canonical_triangles(faces):
    """Rotate each triangle so its smallest index comes first (keeps orientation), sort rows."""
    faces = np.asarray(faces)
    shift = np.argmin(faces, axis=1)
    rolled = np.stack([faces[np.arange(len(faces)), (shift + k) % 3] for k in range(3)], axis=1)
    return rolled[np.lexsort(rolled.T[::-1])]


def assert_same_as_trimesh(path, mesh, exact_faces=True):
    reference = trimesh.load(path, process=False)
    np.testing.assert_array_equal(mesh.vertices, np.asarray(reference.vertices, dtype=np.float32))
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    if exact_faces:
        np.testing.assert_array_equal(mesh.faces, reference.faces)
    else:
        np.testing.assert_array_equal(canonical_triangles(mesh.faces), canonical_triangles(reference.faces))
    np.testing.assert_array_equal(read_ply_vertices(path), mesh.vertices)


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_trimesh_exports_read_identically(tmp_path, head, encoding):
    path = tmp_path / f"{encoding}.ply"
    vertices, faces = head
    path.write_bytes(
        trimesh.exchange.ply.export_ply(trimesh.Trimesh(vertices, faces, process=False), encoding=encoding)
    )
    assert_same_as_trimesh(path, read_ply(path))


def test_shared_head_mesh_with_colors(head):
    if not SHARED_HEAD.exists():
        pytest.skip("shared head mesh not present")
    mesh = read_ply(SHARED_HEAD)
    assert mesh.vertices.shape == (5023, 3)
    assert_same_as_trimesh(SHARED_HEAD, mesh)


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
@pytest.mark.parametrize("coordinate_type", ["float", "double"])
def test_formats_and_precisions_match_trimesh(tmp_path, head, fmt, coordinate_type):
    vertices, faces = head
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, fmt, xyz_fields(vertices, coordinate_type), faces.tolist())
    mesh = read_ply(path)
    assert_same_as_trimesh(path, mesh)
    np.testing.assert_array_equal(mesh.vertices, vertices.astype(np.float32))


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_extra_vertex_and_face_properties(tmp_path, head, fmt):
    vertices, faces = head
    normals = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    colors = np.arange(len(vertices)) % 256
    fields = [
        ("confidence", "double", np.linspace(0, 1, len(vertices))),
        *xyz_fields(vertices),
        ("nx", "float", normals[:, 0]), ("ny", "float", normals[:, 1]), ("nz", "float", normals[:, 2]),
        ("red", "uchar", colors), ("green", "uchar", colors), ("blue", "uchar", colors),
    ]  # fmt: skip
    face_extra = [("flags", "short", np.arange(len(faces)) % 7)]
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, fmt, fields, faces.tolist(), count_type="ushort", index_type="uint", face_extra=face_extra)
    mesh = read_ply(path)
    np.testing.assert_array_equal(mesh.vertices, vertices.astype(np.float32))
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(read_ply_vertices(path), mesh.vertices)


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_pure_quads_match_trimesh(tmp_path, fmt):
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(4.0), indexing="ij"), -1).reshape(-1, 2)
    vertices = np.column_stack([grid, np.zeros(len(grid))])
    quads = [[i * 4 + j, (i + 1) * 4 + j, (i + 1) * 4 + j + 1, i * 4 + j + 1] for i in range(4) for j in range(3)]
    path = tmp_path / "quads.ply"
    write_custom_ply(path, fmt, xyz_fields(vertices), quads)
    mesh = read_ply(path)
    assert len(mesh.faces) == 2 * len(quads)
    assert_same_as_trimesh(path, mesh, exact_faces=False)


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_mixed_polygons_are_fanned_in_order(tmp_path, fmt):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0]], dtype=np.float64)
    polygons = [[0, 1, 2], [1, 4, 5, 2], [0, 1, 4, 5, 3], [3, 2, 5]] * 50  # 200 faces, many runs
    path = tmp_path / "mixed.ply"
    write_custom_ply(path, fmt, xyz_fields(vertices), polygons, face_extra=[("material", "uchar", [7] * 200)])
    mesh = read_ply(path)
    expected = [[0, 1, 2], [1, 4, 5], [1, 5, 2], [0, 1, 4], [0, 4, 5], [0, 5, 3], [3, 2, 5]] * 50
    np.testing.assert_array_equal(mesh.faces, expected)
    if fmt == "ascii":  # trimesh reads mixed polygons only from ASCII
        assert_same_as_trimesh(path, mesh, exact_faces=False)


def test_face_element_with_texcoord_list_and_elements_around_it(tmp_path, head):
    vertices, faces = head
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        "element camera 1\nproperty float view_px\nproperty float view_py\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nproperty list uchar float texcoord\n"
        "element edge 2\nproperty int vertex1\nproperty int vertex2\nend_header\n"
    ).encode()
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,)), ("m", "u1"), ("uv", "<f4", (6,))])
    rows["n"], rows["i"], rows["m"], rows["uv"] = 3, faces, 6, 0.5
    body = (
        np.zeros(2, "<f4").tobytes() + vertices.astype("<f4").tobytes() + rows.tobytes() + np.zeros(4, "<i4").tobytes()
    )
    path = tmp_path / "texcoords.ply"
    path.write_bytes(header + body)
    mesh = read_ply(path)
    np.testing.assert_array_equal(mesh.vertices, vertices.astype(np.float32))
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(read_ply_vertices(path), mesh.vertices)
    path.write_bytes(header + body[:-4])  # the trailing edge element is cut short
    with pytest.raises(TrackingError, match="truncated body: element 'edge'"):
        read_ply(path)


def test_point_cloud_has_no_faces(tmp_path, head):
    path = tmp_path / "points.ply"
    write_custom_ply(path, "binary_little_endian", xyz_fields(head[0]), None)
    mesh = read_ply(path)
    assert mesh.faces is None
    np.testing.assert_array_equal(mesh.vertices, head[0].astype(np.float32))


def test_write_ply_round_trips_through_trimesh(tmp_path, head):
    vertices, faces = head
    path = tmp_path / "written.ply"
    write_ply(path, vertices, faces)
    assert_same_as_trimesh(path, read_ply(path))
    assert [p.name for p in tmp_path.iterdir()] == ["written.ply"]  # no partial file left behind
    write_ply(path, vertices)
    assert read_ply(path).faces is None


def test_write_ply_rejects_bad_input(tmp_path, head):
    vertices, faces = head
    with pytest.raises(TrackingError, match=r"\[V, 3\]"):
        write_ply(tmp_path / "a.ply", vertices[:, :2])
    with pytest.raises(TrackingError, match="NaN or Inf"):
        write_ply(tmp_path / "a.ply", np.full((3, 3), np.nan))
    with pytest.raises(TrackingError, match="face indices must lie in"):
        write_ply(tmp_path / "a.ply", vertices, faces + len(vertices))


def test_read_ply_vertices_fills_out_and_checks_count(tmp_path, head):
    vertices, faces = head
    path = tmp_path / "frame_0.ply"
    write_ply(path, vertices, faces)
    out = np.zeros((len(vertices), 3), dtype=np.float32)
    assert read_ply_vertices(path, expected_vertex_count=len(vertices), out=out) is out
    np.testing.assert_array_equal(out, vertices.astype(np.float32))
    with pytest.raises(TrackingError, match=f"has {len(vertices)} vertices, expected 12") as error:
        read_ply_vertices(path, expected_vertex_count=12)
    assert str(path) in str(error.value)


# ----------------------------------------------------------------------------- errors


def expect_error(path, match, readers=(read_ply, read_ply_vertices)):
    for reader in readers:
        with pytest.raises(TrackingError, match=match) as error:
            reader(path)
        assert str(path) in str(error.value), reader.__name__


def test_not_a_ply(tmp_path):
    path = tmp_path / "mesh.ply"
    path.write_bytes(b"OFF\n3 1 0\n")
    expect_error(path, "not a PLY file")


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.ply", "cannot read file")


def test_header_without_end(tmp_path):
    path = tmp_path / "mesh.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n")
    expect_error(path, "no end_header")


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_body(tmp_path, head, fmt, keep):
    vertices, faces = head
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, fmt, xyz_fields(vertices), faces.tolist())
    data = path.read_bytes()
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    cut = header_end + int((len(data) - header_end) * keep)
    if fmt == "ascii":
        cut = data.rindex(b"\n", 0, cut) + 1  # a cut at a line end: still missing values
    path.write_bytes(data[:cut])
    expect_error(path, "truncated")


def test_truncated_polygon_body(tmp_path):
    vertices = np.eye(4)[:, :3] + 1
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, "binary_little_endian", xyz_fields(vertices), [[0, 1, 2, 3], [0, 1, 2]])
    path.write_bytes(path.read_bytes()[:-5])
    expect_error(
        path, "truncated or corrupt body: element 'face' declares 2 rows but only 1 could be read", (read_ply,)
    )


@pytest.mark.parametrize(
    "line, match",
    [
        ("property float16 x", "unsupported property type 'float16' for vertex.x"),
        ("property int64 x", "unsupported property type 'int64'"),
        ("property int x", "vertex property 'x' must be float or double"),
        ("property list uchar float x", "vertex property 'x' must be float or double"),
    ],
)
def test_unsupported_vertex_properties(tmp_path, line, match):
    path = tmp_path / "mesh.ply"
    path.write_bytes(
        f"ply\nformat binary_little_endian 1.0\nelement vertex 1\n{line}\nproperty float y\nproperty float z\nend_header\n".encode()
        + bytes(12)
    )
    expect_error(path, match)


def test_unsupported_format(tmp_path):
    path = tmp_path / "mesh.ply"
    path.write_bytes(b"ply\nformat binary_middle_endian 1.0\nelement vertex 0\nend_header\n")
    expect_error(path, "unsupported format")


def test_empty_mesh(tmp_path):
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, "binary_little_endian", xyz_fields(np.zeros((0, 3))), [])
    expect_error(path, "empty mesh: 0 vertices")


@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(tmp_path, head, fmt, bad):
    vertices, faces = head
    vertices = vertices.copy()
    vertices[17, 1] = bad
    vertices[40, 2] = bad
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, fmt, xyz_fields(vertices), faces.tolist())
    expect_error(path, r"2 vertices have NaN or Inf coordinates \(first: vertex 17\)")


def test_face_index_out_of_range(tmp_path):
    vertices = np.eye(3)
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, "binary_little_endian", xyz_fields(vertices), [[0, 1, 2], [0, 2, 3]])
    expect_error(path, r"face 1 has vertex index \[0, 2, 3\] outside \[0, 3\)", (read_ply,))
    write_custom_ply(path, "binary_little_endian", xyz_fields(vertices), [[0, 1, 2], [-1, 1, 2]])
    expect_error(path, r"face 1 has vertex index \[-1, 1, 2\]", (read_ply,))


def test_face_with_two_vertices(tmp_path):
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, "ascii", xyz_fields(np.eye(3)), [[0, 1, 2], [0, 1]])
    expect_error(path, "face 1 has 2 vertices; faces need at least 3", (read_ply,))


def test_ascii_garbage_and_extra_values(tmp_path):
    path = tmp_path / "mesh.ply"
    write_custom_ply(path, "ascii", xyz_fields(np.eye(3)), [[0, 1, 2]])
    text = path.read_bytes()
    path.write_bytes(text.replace(b"\n3 0 1 2", b"\n3 0 one 2"))
    expect_error(path, "not a number")
    path.write_bytes(text + b"3 0 1 2\n")
    expect_error(path, "4 values beyond the declared elements", (read_ply,))
