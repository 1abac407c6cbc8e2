"""Denoiser: shapes, causal and aligned masks, FiLM, null condition, positional encodings, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models.config import ModelConfig, load_config
from models.denoiser import AlignedCrossAttention, Denoiser, FiLM
from models.positional import positional_encoding

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_denoiser(**overrides) -> Denoiser:
    torch.manual_seed(0)
    cfg = ModelConfig(
        **{
            "motion_dim": 12,
            "audio_dim": 10,
            "width": 32,
            "layers": 2,
            "heads": 4,
            "ff": 64,
            "dropout": 0.0,
            **overrides,
        }
    )
    return Denoiser(cfg).eval()


@pytest.mark.parametrize("frames", [1, 7, 48, 300])
def test_output_has_motion_shape_for_any_length(frames):
    model = tiny_denoiser()
    x = torch.randn(3, frames, 12)
    out = model(x, torch.tensor([0, 500, 999]), torch.randn(3, frames, 10))
    assert out.shape == (3, frames, 12)
    assert torch.isfinite(out).all()


def test_misaligned_audio_is_refused():
    model = tiny_denoiser()
    with pytest.raises(ValueError, match="not aligned"):
        model(torch.randn(2, 10, 12), torch.tensor([1, 2]), torch.randn(2, 11, 10))


def test_self_attention_is_causal_in_motion_and_audio():
    model = tiny_denoiser()
    x, audio, t = torch.randn(1, 20, 12), torch.randn(1, 20, 10), torch.tensor([300])
    base = model(x, t, audio)
    x2, audio2 = x.clone(), audio.clone()
    x2[:, 11:] += torch.randn(1, 9, 12)
    audio2[:, 11:] += torch.randn(1, 9, 10)
    changed = model(x2, t, audio2)
    torch.testing.assert_close(changed[:, :11], base[:, :11])
    assert not torch.allclose(changed[:, 11:], base[:, 11:])


def test_aligned_cross_attention_sees_only_its_own_audio_frame():
    torch.manual_seed(0)
    cross = AlignedCrossAttention(16)
    memory = torch.randn(2, 10, 16)
    base = cross(memory)
    poked = memory.clone()
    poked[:, 4] += 1.0
    diff = (cross(poked) - base).abs().sum(dim=(0, 2))
    assert diff[4] > 0
    assert torch.count_nonzero(diff) == 1


def test_aligned_cross_attention_equals_multihead_attention_with_diagonal_mask():
    torch.manual_seed(0)
    width, frames = 16, 9
    mha = nn.MultiheadAttention(width, num_heads=4, batch_first=True)
    cross = AlignedCrossAttention(width)
    w_v = mha.in_proj_weight.chunk(3)[2]  # query/key weights stay random: they cannot matter
    b_v = mha.in_proj_bias.chunk(3)[2]
    with torch.no_grad():
        cross.value.weight.copy_(w_v)
        cross.value.bias.copy_(b_v)
        cross.out.weight.copy_(mha.out_proj.weight)
        cross.out.bias.copy_(mha.out_proj.bias)
    query, memory = torch.randn(2, frames, width), torch.randn(2, frames, width)
    diagonal_only = ~torch.eye(frames, dtype=torch.bool)  # True = not allowed (FaceFormer's alignment mask)
    expected, _ = mha(query, memory, memory, attn_mask=diagonal_only)
    torch.testing.assert_close(cross(memory), expected, rtol=1e-5, atol=1e-5)


def test_film_applies_scale_and_shift_from_the_step_embedding():
    film = FiLM(4)
    with torch.no_grad():
        film.to_scale_shift[1].weight.zero_()
        film.to_scale_shift[1].bias.copy_(torch.tensor([1.0, 0.0, -0.5, 2.0, 0.1, 0.2, 0.3, 0.4]))
    h = torch.ones(2, 3, 4)
    out = film(h, torch.randn(2, 4))
    expected = torch.tensor([1 + 1.0, 1 + 0.0, 1 - 0.5, 1 + 2.0]) + torch.tensor([0.1, 0.2, 0.3, 0.4])
    torch.testing.assert_close(out, expected.expand(2, 3, 4))


def test_fused_film_residual_matches_the_plain_one():
    torch.manual_seed(0)
    film = FiLM(8)
    x, h, step = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 8)
    torch.testing.assert_close(film.add_to(x, h, step), x + film(h, step))


def test_diffusion_step_changes_the_prediction():
    model = tiny_denoiser()
    x, audio = torch.randn(1, 8, 12), torch.randn(1, 8, 10)
    assert not torch.allclose(model(x, torch.tensor([10]), audio), model(x, torch.tensor([900]), audio))


def test_null_condition_ignores_audio_and_is_per_sample():
    model = tiny_denoiser()
    x, t = torch.randn(2, 8, 12), torch.tensor([100, 100])
    keep = torch.tensor([True, False])
    a, b = model(x, t, torch.randn(2, 8, 10), keep), model(x, t, torch.randn(2, 8, 10), keep)
    torch.testing.assert_close(a[1], b[1])  # dropped: audio irrelevant
    assert not torch.allclose(a[0], b[0])  # kept: audio matters


def test_periodic_positional_encoding_repeats_every_period():
    table = positional_encoding("ppe", 100, 32, period=24)
    torch.testing.assert_close(table[:24], table[24:48])
    assert not torch.allclose(table[0], table[1])
    sinus = positional_encoding("sinusoidal", 100, 32, period=24)
    assert not torch.allclose(sinus[:24], sinus[24:48])


def test_sinusoidal_positional_variant_runs():
    model = tiny_denoiser(positional="sinusoidal")
    assert model(torch.randn(1, 30, 12), torch.tensor([5]), torch.randn(1, 30, 10)).shape == (1, 30, 12)


@pytest.mark.parametrize("name", ["nphm.yaml", "tiny.yaml", "flame.yaml", "flame_tiny.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.diffusion.steps == 1000
    assert cfg.model.width % cfg.model.heads == 0


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  widht: 64\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*widht"):
        load_config(bad)
    bad.write_text("model:\n  width: 30\n  heads: 4\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*divisible"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
