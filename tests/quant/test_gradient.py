"""The output-gradient quantizer: what reaches dL/dW and dL/dX, robustness, and each interval policy."""
import pytest
import torch
import torch.nn as nn

from quant import QConv2d, QLinear, QuantSpec, drain_grad_stats, quantize_, set_recording
from quant.grad.fixed import FixedPolicy
from quant.grad.lbt import LBTPolicy
from quant.grad.minmax import MinMaxPolicy
from quant.gradient import GradQuantizer
from quant.primitives import quantize_symmetric


def make_layer(kind):
    spec = QuantSpec(w_bits=4, a_bits=4, g_bits=4, grad=FixedPolicy(gamma=0.7))
    if kind == "conv":
        return QConv2d(3, 8, 3, padding=1, spec=spec), torch.rand(4, 3, 8, 8)
    return QLinear(12, 6, spec=spec), torch.rand(5, 12)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_weight_and_input_gradients_are_computed_from_the_quantized_output_gradient(kind):
    torch.manual_seed(0)
    layer, x = make_layer(kind)
    layer(x)  # first batch initialises the intervals
    x = x.requires_grad_()
    set_recording(layer, True)
    y = layer(x)
    upstream = torch.randn_like(y)
    torch.manual_seed(1)
    (y * upstream).sum().backward()

    torch.manual_seed(1)  # the same noise draw as the layer's backward
    g_hat = quantize_symmetric(upstream, 0.7 * upstream.abs().max(), 4, stochastic=True)
    assert not torch.allclose(g_hat, upstream)  # the comparison below would not notice a missing quantizer
    with torch.no_grad():
        xq, wq = layer.aq(x), layer.wq(layer.weight)
    xq, wq = xq.requires_grad_(), wq.requires_grad_()
    op = layer._conv_forward(xq, wq, layer.bias) if kind == "conv" else nn.functional.linear(xq, wq, layer.bias)
    d_xq, d_wq = torch.autograd.grad(op, (xq, wq), grad_outputs=g_hat)
    x_inside = (x <= layer.aq.upper) & (x >= 0)
    w_inside = layer.weight.abs() <= layer.wq.scale
    assert torch.allclose(x.grad, torch.where(x_inside, d_xq, 0.0), atol=1e-6)
    assert torch.allclose(layer.weight.grad, torch.where(w_inside, d_wq, 0.0), atol=1e-6)
    stats = drain_grad_stats(layer)
    expected_e_g = ((g_hat - upstream).abs().mean() / upstream.abs().max()).item()
    assert stats["E_G/"] == pytest.approx(expected_e_g, rel=1e-5)


def test_zero_and_nonfinite_gradients_pass_through_unchanged_and_are_counted():
    quantizer = GradQuantizer(4, LBTPolicy())
    x = torch.ones(100, requires_grad=True)
    quantizer(x).backward(torch.zeros(100))
    assert torch.equal(x.grad, torch.zeros(100))
    bad = torch.randn(100)
    bad[3], bad[7] = float("inf"), float("nan")
    x.grad = None
    quantizer(x).backward(bad)
    torch.testing.assert_close(x.grad, bad, equal_nan=True)  # no new NaN, nothing else changed
    assert quantizer.skipped.item() == 2 and quantizer.gamma.item() == 1.0


def test_lbt_holds_the_clipped_fraction_near_its_target_on_a_stationary_stream():
    # alpha = 1e-2 so that r* = alpha / 15 is ~44 elements of 2^16 rather than ~4: r is then not too discrete.
    torch.manual_seed(0)
    policy = LBTPolicy(alpha=1e-2)
    quantizer = GradQuantizer(4, policy)
    x = torch.zeros(2**16, requires_grad=True)

    def backward_one(g):
        rate = (g.abs() > quantizer.gamma * g.abs().max()).float().mean()  # r at the gamma this step uses
        quantizer(x).backward(g)
        return rate

    quantizer.warming_up = True
    backward_one(torch.randn(2**16))
    warmed = quantizer.gamma.item()
    quantizer.warming_up = False
    rates = torch.stack([backward_one(torch.randn(2**16)) for _ in range(600)])
    settled, target = rates[300:], policy.target(4)
    assert abs(settled.mean().item() / target - 1) < 0.3
    assert abs(settled.median().item() / target - 1) < 0.3  # a sign update settles the median of r on r*
    assert 0.3 < warmed < quantizer.gamma.item() < 1.0  # the official warm-up overshoots downwards


def official_warmup(g, bits, alpha=1e-3, momentum=0.999):
    """cvlab-yonsei/LBT train.py update_interval(init=True), as a plain python loop."""
    g_max, gamma, ema = g.abs().max().item(), 1.0, 0.0
    while True:
        r = (g.abs() > g_max * gamma).float().mean().item()
        ema = momentum * ema + (1 - momentum) * r
        step = 1.0 if ema > alpha / (2**bits - 1) else (0.0 if ema == alpha / (2**bits - 1) else -1.0)
        gamma += (1 - momentum) * step
        if step > 0:
            return min(max(gamma, 1e-3), 1.0)


def test_vectorised_lbt_warmup_equals_the_official_loop():
    torch.manual_seed(0)
    for g in (torch.randn(20_000), torch.distributions.StudentT(3.0).sample((20_000,))):
        ours = LBTPolicy().warmup_gamma(g, g.abs().max(), 4).item()
        assert ours == pytest.approx(official_warmup(g, 4), abs=1.5e-3)  # one step of float rounding


def test_fixed_and_minmax_keep_their_gamma():
    for policy, gamma in ((FixedPolicy(gamma=0.6), 0.6), (MinMaxPolicy(), 1.0)):
        quantizer = GradQuantizer(4, policy)
        x = torch.zeros(1000, requires_grad=True)
        for _ in range(3):
            quantizer(x).backward(torch.randn(1000))
        assert quantizer.gamma.item() == pytest.approx(gamma)


def test_statistics_are_produced_per_layer_on_recording_steps_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.Linear(16, 4))
    quantize_(model, QuantSpec(w_bits=4, a_bits=4, g_bits=4, grad=LBTPolicy()))
    x = torch.randn(6, 3, 8, 8)
    model(x).sum().backward()
    assert drain_grad_stats(model) == {"grad/skipped_tensors": 0.0}
    set_recording(model, True)
    model(x).sum().backward()
    set_recording(model, False)
    stats = drain_grad_stats(model)
    layers = ["2", "4", "6"]  # conv "0" and the last linear "7" stay full precision
    expected = {f"{s}/{n}" for s in ("E_G", "E_GL", "clip_frac", "gamma", "g_max") for n in layers}
    assert set(stats) == expected | {"grad/skipped_tensors"}
    assert all(0 <= stats[f"E_G/{n}"] < 1 and 0 < stats[f"gamma/{n}"] <= 1 for n in layers)
    assert drain_grad_stats(model) == {"grad/skipped_tensors": 0.0}  # drained
