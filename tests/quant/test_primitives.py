"""Invariants of the pure grid functions (quant.primitives)."""
import pytest
import torch

from quant.primitives import (expected_squared_error, hashed_uniform_like, quantize_symmetric, quantize_unsigned,
                              round_stochastic)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_symmetric_values_lie_on_the_2b_minus_1_grid_and_zero_is_a_level(bits):
    torch.manual_seed(0)
    x = torch.randn(10_000) * 3
    clip = torch.tensor(2.5)
    step = 2 * clip / (2**bits - 2)
    for stochastic in (False, True):
        q = quantize_symmetric(x, clip, bits, stochastic=stochastic)
        k = (q + clip) / step
        assert torch.allclose(k, k.round(), atol=1e-3)
        assert k.round().min() >= 0 and k.round().max() <= 2**bits - 2
        assert q.abs().max() <= clip + 1e-6  # saturation
        assert q.unique().numel() <= 2**bits - 1
    assert quantize_symmetric(torch.zeros(3), clip, bits).abs().max() < 1e-6


@pytest.mark.parametrize("bits", [2, 4])
def test_unsigned_grid_has_2b_levels_in_0_u(bits):
    x = torch.linspace(-1, 5, 10_001)
    q = quantize_unsigned(x, 4.0, bits)
    assert q.unique().numel() == 2**bits
    assert q.min() == 0 and torch.isclose(q.max(), torch.tensor(4.0))


def test_stochastic_rounding_is_unbiased():
    torch.manual_seed(0)
    t = torch.tensor([0.1, 0.5, 2.75, -1.3]).repeat(200_000, 1)  # (N, 4): many draws of each value
    r = round_stochastic(t)
    assert set(r[:, 2].unique().tolist()) == {2.0, 3.0}  # random, not nearest
    bias = (r - t).mean(dim=0)
    assert bias.abs().max() < 4e-3  # standard error of each mean is <= 0.5 / sqrt(2e5) = 1.1e-3


def test_hashed_noise_is_uniform_decorrelated_and_unbiased_for_rounding():
    t = torch.empty(400_000)
    u1 = hashed_uniform_like(t, torch.tensor(1))
    u2 = hashed_uniform_like(t, torch.tensor(2))
    assert u1.min() >= 0 and u1.max() < 1
    assert abs(u1.mean().item() - 0.5) < 3e-3 and abs(u1.var().item() - 1 / 12) < 2e-3
    counts = torch.histc(u1, bins=20, min=0, max=1)
    assert (counts / counts.mean() - 1).abs().max() < 0.05
    assert abs(torch.corrcoef(torch.stack([u1, u2]))[0, 1]) < 0.01  # different seeds, different streams
    assert abs(torch.corrcoef(torch.stack([u1[:-1], u1[1:]]))[0, 1]) < 0.01  # neighbours independent
    x = torch.full_like(t, 3.3)
    assert abs((round_stochastic(x, u1) - x).mean().item()) < 3e-3


def test_expected_squared_error_matches_monte_carlo():
    torch.manual_seed(0)
    x = torch.randn(2_000) * 2
    clips = torch.tensor([[0.5], [2.0], [8.0]])  # (3, 1): clipping-dominated to rounding-dominated
    expected = expected_squared_error(x.unsqueeze(0), clips, bits=4).mean(dim=1)  # (3,)
    draws = torch.stack([((quantize_symmetric(x, c, 4, stochastic=True) - x) ** 2).mean()
                         for c in clips.flatten() for _ in range(400)]).view(3, 400).mean(dim=1)
    assert torch.allclose(expected, draws, rtol=0.03)
