"""Region files and configured NPHM mouth dimensions."""

import json

import pytest

from ops.evaluation.regions import CodeRegions, EvaluationError, configured_code_regions, read_regions


def test_upper_and_lower_lip_are_optional_but_come_together(tmp_path):
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"lip": [0, 1, 2, 3], "upper_face": [9], "upper_lip": [0, 1], "lower_lip": [2, 3]}))
    regions = read_regions(path)
    assert regions.upper_lip.tolist() == [0, 1] and regions.lower_lip.tolist() == [2, 3]
    path.write_text(json.dumps({"lip": [0, 1], "upper_face": [9], "upper_lip": [0]}))
    with pytest.raises(EvaluationError, match="both 'upper_lip' and 'lower_lip'"):
        read_regions(path)


def test_configured_mouth_dims_override_the_regions_file(tmp_path):
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"lip": [0], "upper_face": [1], "expression": {"mouth_dims": [0, 1, 2], "jaw_dim": 0}}))
    notes: list[str] = []
    assert configured_code_regions(path, [], -1, notes) == CodeRegions((0, 1, 2), 0) and not notes
    assert configured_code_regions(path, [5, 6], -1, notes) == CodeRegions((5, 6), 0)
    assert configured_code_regions(path, [], 7, notes) == CodeRegions((0, 1, 2), 7)
    assert configured_code_regions(tmp_path / "absent.json", [], 4, notes) == CodeRegions((4,), 4)
    assert "jaw_dim configured without mouth_dims" in notes[-1]
    assert configured_code_regions(tmp_path / "absent.json", [], -1, notes) is None
    assert "mouth metrics use the whole code" in notes[-1]
    with pytest.raises(EvaluationError, match="do not fit a 200-d code"):
        CodeRegions((0, 250), 0).checked(200)
