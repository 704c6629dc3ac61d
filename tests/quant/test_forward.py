"""Weight/activation fake-quantization: grids, first-batch initialisation, straight-through gradients."""
import math

import pytest
import torch

from quant.forward import ActQuantizer, WeightQuantizer, fake_quantize


def reference_fake_quantize(x, upper, signed, bits):
    """u * round(clamp(x/u)) written with autograd ops and a detach-style straight-through round."""
    levels = 2**bits - 1 - signed
    lo = -upper * signed
    step = (upper - lo) / levels
    t = (torch.minimum(torch.maximum(x, lo), upper) - lo) / step
    t = t + (t.round() - t).detach()
    return t * step + lo


@pytest.mark.parametrize("signed", [0.0, 1.0])
def test_gradients_are_straight_through_with_a_learnable_upper_bound(signed):
    torch.manual_seed(0)
    x = (torch.randn(4_000) * 2).requires_grad_()
    upper = torch.tensor(2.3, requires_grad=True)
    g = torch.randn(4_000)
    (fake_quantize(x, upper, signed, 4) * g).sum().backward()
    x_ref, upper_ref = x.detach().clone().requires_grad_(), upper.detach().clone().requires_grad_()
    (reference_fake_quantize(x_ref, upper_ref, signed, 4) * g).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad)
    assert torch.allclose(upper.grad, upper_ref.grad, rtol=1e-4)
    inside = (x.detach() <= 2.3) & (x.detach() >= -2.3 * signed)
    assert torch.equal(x.grad, torch.where(inside, g, 0.0))  # STE inside the range, zero where it saturates


def test_weight_quantizer_initialises_to_3_std_and_quantizes_symmetrically():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3) * 0.1
    wq = WeightQuantizer(4)
    q = wq(w)
    assert torch.isclose(wq.scale, 3 * w.std())
    assert q.unique().numel() <= 15 and torch.isclose(q.max(), -q.min())
    wq(w * 10)  # later batches do not re-initialise
    assert torch.isclose(wq.scale, 3 * w.std())


def test_activation_quantizer_is_unsigned_after_relu_and_symmetric_otherwise():
    torch.manual_seed(0)
    x = torch.randn(128, 16, 8, 8).relu()
    aq = ActQuantizer(4)
    q = aq(x)
    assert aq.signed == 0 and torch.isclose(aq.upper, 3 * x.std() / math.sqrt(1 - 2 / math.pi))
    assert q.min() == 0 and q.unique().numel() == 16  # 2^b levels in [0, u]

    x = torch.randn(128, 16, 8, 8)
    aq = ActQuantizer(4)
    q = aq(x)
    assert aq.signed == 1 and torch.isclose(aq.upper, 3 * x.std())
    assert q.unique().numel() == 15 and (q == 0).any()  # 2^b - 1 levels, zero among them


def test_loaded_intervals_are_not_reinitialised():
    x = torch.rand(8, 4) + 1
    trained = ActQuantizer(4)
    trained(x)
    with torch.no_grad():
        trained.upper.fill_(0.123)
    fresh = ActQuantizer(4)
    fresh.load_state_dict(trained.state_dict())
    fresh(x * 5)
    assert fresh.upper.item() == pytest.approx(0.123)
