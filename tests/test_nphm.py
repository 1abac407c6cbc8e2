"""NPHM head model: the NPHM formulas, backward deformation, batching, and checkpoint loading."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.heads.base import EXPRESSION_DIM, IDENTITY_DIM, HeadModel
from models.heads.nphm import NPHM, NPHMCheckpointError, NPHMConfig, load_nphm, save_nphm
from models.heads.nphm_reference import literal_nphm_sdf, release_sdf
from tests.conftest import SHARED_DATA

TINY = NPHMConfig(
    n_anchors=5,
    n_symmetric_pairs=2,
    identity_global_dim=8,
    identity_local_dim=4,
    identity_hidden_dim=32,
    identity_layers=4,
    anchor_mlp_dim=16,
    expression_dim=6,
    compressed_identity_dim=4,
    deformation_hidden_dim=32,
    deformation_layers=4,
)
MEAN_IDENTITY = SHARED_DATA / "nphm_identity_lat_mean.npy"


def tiny_model(seed: int = 0, deforming: bool = True) -> NPHM:
    """A tiny NPHM with a spread-out anchor layout; `deforming` gives the deformation non-zero output."""
    torch.manual_seed(seed)
    model = NPHM(TINY)
    with torch.no_grad():
        model.identity.anchor_mean.copy_(torch.rand(TINY.n_anchors, 3) * 0.6 - 0.3)
        if deforming:
            torch.nn.init.normal_(model.deformation.mlp.layers[-1].weight, std=0.05)
            torch.nn.init.normal_(model.deformation.mlp.layers[-1].bias, std=0.02)
    return model.eval()


def codes(config: NPHMConfig, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(config.identity_dim, generator=g) * 0.3, torch.randn(config.expression_dim, generator=g)


def grid_points(n: int = 600, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)) * 1.0 - 0.5


# --- the model ---


def test_paper_config_matches_the_head_model_interface():
    config = NPHMConfig()
    assert config.identity_dim == IDENTITY_DIM == 64 + 40 * 32
    assert config.expression_dim == EXPRESSION_DIM
    model = NPHM(config)
    assert isinstance(model, HeadModel)
    # symmetric pairs share weights: 40 members, 16 pairs -> 24 stored weight sets
    assert model.identity.members.layers[0].weight.shape == (24, 200, 3 + 64 + 32)
    assert model.deformation.compressor.weight.shape == (32, 1344 + 39 * 3)


def test_batched_evaluation_matches_the_literal_nphm_formulas():
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    points = grid_points()
    with torch.no_grad():
        expected = literal_nphm_sdf(model, points, z_id, z_ex)
    assert torch.allclose(model.sdf(points, z_id, z_ex), expected, atol=1e-5)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero fields


def test_sdf_is_independent_of_the_batch_size_and_returns_float32_on_the_points_device():
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    points = grid_points(1000)
    whole = model.sdf(points, z_id, z_ex, points_per_batch=4096)
    pieces = model.sdf(points.double(), z_id, z_ex, points_per_batch=97)
    assert whole.shape == (1000,) and whole.dtype == torch.float32 and whole.device == points.device
    assert torch.allclose(whole, pieces, atol=1e-6)


def test_sdf_is_the_inference_field_even_in_training_mode():
    model = tiny_model().train()
    z_id, z_ex = codes(TINY)
    points = grid_points()
    first, second = model.sdf(points, z_id, z_ex), model.sdf(points, z_id, z_ex)
    assert torch.equal(first, second)  # no training noise on the compressed identity
    assert model.training  # the mode is restored
    assert torch.allclose(first, model.eval().sdf(points, z_id, z_ex))


def test_forward_is_differentiable_with_respect_to_codes_and_points():
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    z_ex.requires_grad_(True)
    points = grid_points(50).requires_grad_(True)
    model(points, z_id, z_ex).sum().backward()
    assert z_ex.grad is not None and z_ex.grad.abs().sum() > 0
    assert points.grad is not None and torch.isfinite(points.grad).all()


def test_fresh_model_has_zero_deformation_so_the_expression_does_not_matter():
    torch.manual_seed(0)
    model = NPHM(TINY).eval()
    z_id, _ = codes(TINY)
    points = grid_points()
    neutral = model.sdf(points, z_id, torch.zeros(TINY.expression_dim))
    other = model.sdf(points, z_id, torch.randn(TINY.expression_dim) * 3)
    assert torch.equal(neutral, other)
    with torch.no_grad():
        assert torch.equal(model.canonical_points(points, z_id, torch.randn(TINY.expression_dim)), points)
        assert torch.allclose(neutral, model.identity(points, z_id), atol=1e-6)


def test_expression_moves_points_backward_into_canonical_space():
    model = tiny_model(deforming=True)
    z_id, z_ex = codes(TINY)
    points = grid_points()
    posed_a = model.sdf(points, z_id, z_ex)
    posed_b = model.sdf(points, z_id, -z_ex)
    assert (posed_a - posed_b).abs().max() > 1e-4
    with torch.no_grad():
        canonical = model.canonical_points(points, z_id, z_ex)
        assert (canonical - points).abs().max() > 1e-3
        assert torch.allclose(posed_a, model.identity(canonical, z_id), atol=1e-6)


@pytest.mark.parametrize(
    ("points", "identity", "expression", "argument"),
    [
        (torch.zeros(10, 2), None, None, "points"),
        (None, torch.zeros(TINY.identity_dim + 1), None, "identity"),
        (None, None, torch.zeros(1, TINY.expression_dim), "expression"),
    ],
)
def test_bad_input_shapes_name_the_argument(points, identity, expression, argument):
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    with pytest.raises(ValueError, match=argument):
        model.sdf(
            grid_points(10) if points is None else points,
            z_id if identity is None else identity,
            z_ex if expression is None else expression,
        )


@pytest.mark.skipif(not MEAN_IDENTITY.exists(), reason="NPHM mean identity code not in ../shared/data")
def test_paper_size_model_evaluates_the_nphm_mean_identity():
    torch.manual_seed(0)
    model = NPHM().eval()
    z_mean = torch.from_numpy(np.load(MEAN_IDENTITY))
    assert z_mean.shape == (IDENTITY_DIM,)
    points = grid_points(1000)
    sdf = model.sdf(points, z_mean, torch.zeros(EXPRESSION_DIM), points_per_batch=1024)
    assert sdf.shape == (1000,) and torch.isfinite(sdf).all()
    with torch.no_grad():
        assert model.identity.anchors(z_mean).shape == (39, 3)


# --- fast inference (models/heads/nphm_eval.py) against the release's procedure ---


def test_fast_field_equals_the_release_procedure_with_and_without_skipping():
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    points = grid_points(3000)
    expected = release_sdf(model, points, z_id, z_ex)
    every_member = model.sdf(points, z_id, z_ex, skip_below=0.0)
    skipping = model.sdf(points, z_id, z_ex, points_per_batch=700)  # the default threshold, odd batches
    assert (every_member - expected).abs().max() < 1e-6
    assert (skipping - expected).abs().max() < 1e-6
    field = model.field(z_id, z_ex)
    field.sdf(points)
    assert field.member_pairs < 0.9 * len(points) * TINY.n_anchors  # members really were skipped


def test_skipping_changes_the_sdf_by_at_most_the_dropped_weight_times_the_member_sdf():
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    points = grid_points(2000)
    exact = model.sdf(points, z_id, z_ex, skip_below=0.0)
    coarse = model.sdf(points, z_id, z_ex, skip_below=1e-2)
    # member SDFs of this model stay below ~10: the dropped weight (< n_anchors * 1e-2) bounds the change
    assert 1e-6 < (coarse - exact).abs().max() < TINY.n_anchors * 1e-2 * 10


def test_bf16_and_tf32_stay_close_to_fp32_and_bad_options_are_named():
    model = tiny_model()
    z_id, z_ex = codes(TINY)
    points = grid_points(1000)
    fp32 = model.sdf(points, z_id, z_ex, precision="fp32")
    assert (model.sdf(points, z_id, z_ex, precision="bf16") - fp32).abs().max() < 5e-3
    assert torch.allclose(model.sdf(points, z_id, z_ex, precision="tf32"), fp32)  # TF32 is a no-op on CPU
    with pytest.raises(ValueError, match="precision"):
        model.sdf(points, z_id, z_ex, precision="fp8")
    with pytest.raises(ValueError, match="skip_below"):
        model.sdf(points, z_id, z_ex, skip_below=-1.0)


def test_paper_size_fast_field_equals_the_release_procedure():
    torch.manual_seed(0)
    model = NPHM().eval()
    with torch.no_grad():
        model.identity.anchor_mean.copy_(torch.rand(39, 3) * 0.6 - 0.3)
        torch.nn.init.normal_(model.deformation.mlp.layers[-1].weight, std=0.01)
    z_id, z_ex = torch.zeros(IDENTITY_DIM), torch.randn(EXPRESSION_DIM) * 0.1
    points = grid_points(400)
    expected = release_sdf(model, points, z_id, z_ex)
    assert (model.sdf(points, z_id, z_ex) - expected).abs().max() < 1e-5


# --- checkpoints ---


def to_release_names(state: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """Our keys of one part -> the NPHM release's module names (decoder_state_dict)."""
    renames = {
        "identity": [(r"^members\.layers\.(\d+)\.", r"ensembled_deep_sdf.lin\1."), (r"^anchor_mlp\.", "mlp_pos.")],
        "deformation": [(r"^mlp\.layers\.(\d+)\.", r"defDeepSDF.lin\1."), (r"^compressor\.", "compressor.0.")],
    }[part]
    out = {}
    for key, value in state.items():
        if not key.startswith(f"{part}.") or key == "identity.anchor_mean":
            continue
        key = key.removeprefix(f"{part}.")
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def assert_same_field(a: NPHM, b: NPHM) -> None:
    z_id, z_ex = codes(TINY)
    points = grid_points()
    assert torch.equal(a.sdf(points, z_id, z_ex), b.sdf(points, z_id, z_ex))


def test_round_trip_of_a_plain_state_dict(tmp_path):
    model = tiny_model()
    path = tmp_path / "nphm.pt"
    torch.save(model.state_dict(), path)
    assert_same_field(model, load_nphm(path, TINY))
    inferred = load_nphm(path)  # sizes read from the tensor shapes
    assert inferred.config == TINY
    assert_same_field(model, inferred)
    assert not inferred.training


@pytest.mark.parametrize("wrap", ["state_dict", "model", "lightning_prefix", "save_nphm", "two_keys"])
def test_round_trip_of_wrapped_layouts(tmp_path, wrap):
    model = tiny_model()
    path = tmp_path / "nphm.ckpt"
    state = model.state_dict()
    if wrap == "save_nphm":
        save_nphm(model, path)
    elif wrap == "lightning_prefix":
        torch.save({"epoch": 3, "state_dict": {f"head.{k}": v for k, v in state.items()}}, path)
    elif wrap == "two_keys":
        parts = {
            part: {k.removeprefix(f"{part}."): v for k, v in state.items() if k.startswith(part)}
            for part in ("identity", "deformation")
        }
        torch.save(parts, path)
    else:
        torch.save({wrap: state}, path)
    loaded = load_nphm(path)
    assert loaded.config == TINY
    assert_same_field(model, loaded)


def test_round_trip_of_the_release_two_file_layout(tmp_path):
    model = tiny_model()
    state = model.state_dict()
    identity_path, expression_path = tmp_path / "identity.tar", tmp_path / "expression.tar"
    anchors_path = tmp_path / "anchors_39.npy"
    for part, path in (("identity", identity_path), ("deformation", expression_path)):
        torch.save(
            {
                "epoch": 100,
                "decoder_state_dict": to_release_names(state, part),
                "latent_codes_state_dict": {"weight": torch.randn(3, 8)},
            },
            path,
        )
    np.save(anchors_path, state["identity.anchor_mean"].numpy()[None, None])  # as the release holds it
    loaded = load_nphm(identity_path, deformation_path=expression_path, anchor_mean_path=anchors_path)
    assert loaded.config == TINY
    assert_same_field(model, loaded)

    with pytest.raises(NPHMCheckpointError, match="anchor_mean_path"):
        load_nphm(identity_path, TINY, deformation_path=expression_path)
    with pytest.raises(NPHMCheckpointError, match="identity model of the NPHM release alone.*deformation_path"):
        load_nphm(identity_path, anchor_mean_path=anchors_path)
    with pytest.raises(NPHMCheckpointError, match="expression model of the NPHM release alone"):
        load_nphm(expression_path)


def test_shape_mismatch_names_the_parameter_and_the_config_field(tmp_path):
    path = tmp_path / "nphm.pt"
    torch.save(tiny_model().state_dict(), path)
    with pytest.raises(NPHMCheckpointError) as err:
        load_nphm(path, replace(TINY, identity_hidden_dim=48))
    message = str(err.value)
    assert str(path) in message
    assert "identity.members.layers.0.weight: expected (4, 48, 15), found (4, 32, 15)" in message
    assert "identity_hidden_dim=48 in the config, 32 in the checkpoint" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = tiny_model().state_dict()
    del state["deformation.mlp.layers.1.bias"]
    state["deformation.extra.weight"] = torch.zeros(2)
    path = tmp_path / "nphm.pt"
    torch.save(state, path)
    with pytest.raises(NPHMCheckpointError, match="missing keys \\(1\\): deformation.mlp.layers.1.bias") as err:
        load_nphm(path, TINY)
    assert "unexpected keys (1): deformation.extra.weight" in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_nphm(tmp_path / "nowhere.pt")


def test_files_that_are_not_checkpoints_are_named(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(NPHMCheckpointError, match="notes.pt"):
        load_nphm(text)

    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(NPHMCheckpointError, match="tensor.pt.*holds a Tensor"):
        load_nphm(tensor)

    no_tensors = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "name": "x"}, no_tensors)
    with pytest.raises(NPHMCheckpointError, match="meta.pt.*no parameter tensors"):
        load_nphm(no_tensors)

    with pytest.raises(NPHMCheckpointError, match="directory"):
        load_nphm(tmp_path)


class NotAWeight:
    """A Python object in a checkpoint: `weights_only=True` loading must refuse it."""


def test_checkpoints_holding_python_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"identity.anchor_mean": torch.zeros(5, 3), "payload": NotAWeight()}, path)
    with pytest.raises(NPHMCheckpointError, match="pickled.pt.*weights_only=True"):
        load_nphm(path, TINY)


def test_a_folder_stands_for_its_checkpoint_file(tmp_path):
    model = tiny_model()
    save_nphm(model, tmp_path / "nphm.pt")
    z_id, z_ex = codes(TINY)
    points = grid_points(200)
    assert torch.equal(load_nphm(tmp_path).sdf(points, z_id, z_ex), model.sdf(points, z_id, z_ex))
    with pytest.raises(NPHMCheckpointError, match=r"empty.*directory without nphm\.pt"):
        (tmp_path / "empty").mkdir()
        load_nphm(tmp_path / "empty")
