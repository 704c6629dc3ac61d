"""The fused eager quantizers (quant.fused) against the reference functions they compile."""
import pytest
import torch
import torch.nn as nn

import quant.primitives
from quant import QuantSpec, fused, kernel_choices, quantize_
from quant.fused import flat_views as fused_flat_views
from quant.codes import activation_codes, gradient_operands, input_gradients
from quant.forward import _fake_quantize_grads, _fake_quantize_values, fake_quantize
from quant.grad.fixed import FixedPolicy
from quant.grad.lbt import LBTPolicy
from quant.grad.minmax import MinMaxPolicy
from quant.gradient import _quantize_and_update
from quant.kernel_rule import int8_refusal

LAYOUTS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "not dense": lambda t: t[:, :, ::2],
}


@pytest.fixture(autouse=True)
def fused_on(monkeypatch):
    monkeypatch.setattr(fused, "MIN_ELEMENTS", 0)  # these tensors are small: fuse them anyway
    fused.set_fused(True)
    yield
    fused.set_fused(True)


def test_small_tensors_run_the_reference(monkeypatch):
    monkeypatch.setattr(fused, "MIN_ELEMENTS", 100)
    flattened = []  # flat_views runs on the fused path only, before the compiled region
    monkeypatch.setattr(fused, "flat_views", lambda *ts: flattened.append(ts[0].numel()) or fused_flat_views(*ts))
    state = [torch.tensor(1.0), torch.zeros(()), torch.zeros(6), torch.zeros((), dtype=torch.bool), torch.zeros(5)]
    for n in (99, 100):
        _quantize_and_update(torch.randn(n), *state, 4, LBTPolicy(), False, False, False, 1e-3, None, False)
    assert flattened == [100]


def activations(layout: str) -> torch.Tensor:
    torch.manual_seed(0)
    return LAYOUTS[layout](torch.randn(6, 5, 14, 7) * 2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("grid", [(-0.0, 1.0, None, 15.0), (-1.0, 2.0, None, 14.0), (-1.0, 1.0, 7, 15)])
def test_fake_quantize_forward_equals_the_reference_bit_for_bit(layout, grid):
    x, scale = activations(layout), torch.tensor(2.3)
    got, got_lo = _fake_quantize_values(x, scale, *grid)
    want, want_lo = _fake_quantize_values.reference(x, scale, *grid)
    assert torch.equal(got, want) and torch.equal(got_lo, want_lo)
    assert got.shape == x.shape and (got.stride() == x.stride() or layout == "not dense")


def test_grid_constants_are_not_taken_from_another_grids_graph():
    """torch 2.14's FX graph cache gave the signed grid's graph (14 steps) to the unsigned call (15) while numbers
    were dynamic; quant.fused specialises them."""
    torch.manual_seed(0)
    x, upper = torch.randn(4_000) * 2, torch.tensor(2.3, requires_grad=True)
    for signed in (1.0, 0.0, 1.0):
        got = fake_quantize(x, upper, signed, 4)
        fused.set_fused(False)
        want = fake_quantize(x, upper, signed, 4)
        fused.set_fused(True)
        assert torch.equal(got, want), signed


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_quantize_gradients_equal_the_reference(layout):
    x, scale = activations(layout), torch.tensor(2.3)
    x_hat, lo = _fake_quantize_values.reference(x, scale, -1.0, 2.0, None, 14.0)
    g = torch.randn(x.shape)  # NCHW, whatever x's layout: the region copies it to x's
    got_x, got_scale = _fake_quantize_grads(x, x_hat, g, scale, lo, 1.0)
    want_x, want_scale = _fake_quantize_grads.reference(x, x_hat, g, scale, lo, 1.0)
    assert torch.equal(got_x, want_x)
    assert torch.allclose(got_scale, want_scale, rtol=1e-5)  # a sum: Inductor's order of addition


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("signed", [0.0, 1.0])
@pytest.mark.parametrize("codes, index", [(True, True), (False, True), (True, False)])
def test_the_integer_kernels_activation_codes_equal_the_reference_bit_for_bit(layout, signed, codes, index):
    x, upper = activations(layout), torch.tensor(2.3)
    got = activation_codes(x, upper, torch.tensor(signed), 4, codes=codes, index=index)
    want = activation_codes.reference(x, upper, torch.tensor(signed), 4, codes=codes, index=index)
    for g, w in zip(got, want):
        assert (g is None) == (w is None) and (g is None or torch.equal(g, w))
    assert got[1 if index else 0].shape == x.shape
    if index:
        assert got[1].dtype == torch.uint8 and 0 < int(got[1].max()) <= 15


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_integer_kernels_input_gradients_equal_the_reference(layout):
    x, upper = activations(layout), torch.tensor(2.3)
    codes, _, step, _ = activation_codes.reference(x, upper, torch.tensor(1.0), 4, codes=True, index=False)
    grad_codes = torch.randint(-900, 900, x.shape).float()  # NCHW, whatever x's layout: the region copies it to x's
    args = (torch.tensor(3e-4), step, -upper, upper)
    got_x, got_upper = input_gradients(x, grad_codes, codes, *args)
    want_x, want_upper = input_gradients.reference(x, grad_codes, codes, *args)
    assert torch.equal(got_x, want_x) and not torch.equal(got_x, grad_codes * 3e-4)  # clipped somewhere
    assert torch.allclose(got_upper, want_upper, rtol=1e-5)  # a sum: Inductor's order of addition


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("signed", [False, True])
def test_the_integer_kernels_gradient_operands_equal_the_reference_bit_for_bit(layout, signed):
    codes = LAYOUTS[layout](torch.randint(-127, 128, (6, 5, 14, 7)).float())
    got, want = gradient_operands(codes, 128, signed), gradient_operands.reference(codes, 128, signed)
    assert torch.equal(got[0], want[0]) and got[0].dtype == torch.uint8
    assert (got[1] is None) == (not signed) and (not signed or torch.equal(got[1], want[1]))


def value_noise(t: torch.Tensor) -> torch.Tensor:
    """U[0, 1)-ish noise that depends on each value, not its position: the same in any memory layout."""
    return torch.frac((t * 7919.0).abs())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("policy", [LBTPolicy(), MinMaxPolicy(), FixedPolicy(gamma=0.6)])
@pytest.mark.parametrize("codes", [False, True])
def test_gradient_quantizer_equals_the_reference_bit_for_bit(monkeypatch, layout, policy, codes):
    monkeypatch.setattr(quant.primitives, "uniform_like", value_noise)  # the same noise in both
    g = activations(layout) * 1e-3
    results, states = [], []
    for fn in (_quantize_and_update, _quantize_and_update.reference):
        state = [torch.tensor(0.9), torch.zeros(()), torch.zeros(6), torch.zeros((), dtype=torch.bool), torch.zeros(5)]
        results.append(fn(g, *state, 4, policy, False, False, False, 1e-3, None, codes))
        states.append(state)
    (g_hat, code, step), (ref_hat, ref_code, ref_step) = results
    assert torch.equal(g_hat, ref_hat) and g_hat.shape == g.shape
    assert not torch.equal(g_hat, g)  # quantized at all
    if codes:
        assert torch.equal(code, ref_code) and torch.equal(step, ref_step)
    for got, want in zip(*states):  # gamma moved by the clipped fraction, counters
        assert torch.equal(got, want)


def test_the_deferred_row_and_a_skipped_gradient_match_the_reference():
    zero = torch.zeros(3, 4, 5)
    for g in (zero, torch.randn(3, 4, 5)):
        rows = []
        for fn in (_quantize_and_update, _quantize_and_update.reference):
            pending = torch.zeros(5)
            fn(g, torch.tensor(1.0), torch.zeros(()), torch.zeros(6), torch.zeros((), dtype=torch.bool), pending, 4,
               LBTPolicy(), False, False, True, 1e-3, None, False)
            rows.append(pending)
        assert torch.equal(*rows)


def test_disabled_runs_the_reference_functions(monkeypatch):
    calls = []
    monkeypatch.setattr(quant.primitives, "uniform_like", lambda t: calls.append(1) or torch.rand_like(t))
    fused.set_fused(False)
    _quantize_and_update(torch.randn(10), torch.tensor(1.0), torch.zeros(()), torch.zeros(6),
                         torch.zeros((), dtype=torch.bool), torch.zeros(5), 4, LBTPolicy(), False, False, False,
                         1e-3, None, False)
    assert calls  # traced code would not call the python function


def test_int8_is_refused_on_a_cpu_without_vnni(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert "no VNNI" in int8_refusal()
    model = quantize_(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)), QuantSpec(
        w_bits=8, a_bits=8, g_bits=8, keep_first_last=False, kernel="int8"))
    assert set(kernel_choices(model).values()) == {"exact"}
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    assert int8_refusal() is None
