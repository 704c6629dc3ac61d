"""quant.kernel=exact|int8 (docs/methods.md §1.9): the op runs on integer codes and the scales come after it.

Invariants: every operand handed to a conv/matmul is an integer code on its grid; int8 equals exact with no
tolerance (integer arithmetic; the layers here keep every float32 sum of codes below 2^24, so exact is exact
too; the model-level ResNet-20 is the exception, see its test); exact equals fake in float32 up to accumulation
order; under bf16 autocast exact equals its fp32 result; the straight-through and interval gradients are the fake
path's.
"""
import copy

import pytest
import torch
import torch.nn as nn

from models.resnet_cifar import resnet20
from quant import QuantSpec, kernel_choices, quantize_, warmup_grad_intervals
from quant.grad.lbt import LBTPolicy
from quant import kernel_rule
from quant.kernel_rule import int8_refusal
from quant.exactness import OperandRecorder, assert_int8_equals_exact, assert_integer_operands
from quant.im2col import INT32_SAFE_K
from quant.integer import int_matmul

# Without VNNI a training run refuses int8 (kernel_rule.int8_refusal): slow, and oneDNN's u8 x s8 pair sums saturate
# at 16 bits there (oneDNN developer guide, "Nuances of int8 Computations"). The int8 code is this project's all the
# same, so these tests force it: their small layers' sums stay below saturation and int8 still equals exact. Only
# the 8-bit ResNet-20 through oneDNN's direct convolution reaches it (its first loss then differs from exact's).
VNNI = int8_refusal() is None


@pytest.fixture(autouse=True)
def int8_even_without_vnni(monkeypatch):
    monkeypatch.setattr(kernel_rule, "int8_refusal", lambda: None)


@pytest.fixture(autouse=True)
def int8_convs_from_16_channels(monkeypatch):
    """The channel rule is about speed; exactness is tested on small layers, so the rule is pinned at 16 channels
    here whatever it is set to (conv3x3-narrow, 8 in, falls back to exact)."""
    monkeypatch.setattr(kernel_rule, "INT8_MIN_CONV_CHANNELS", 16)


# How an int8 convolution larger than 1x1 runs (quant.integer chooses by output pixels and channels; the layers
# here are small, so each lowering is forced): im2col GEMMs, oneDNN's direct int8 convolution for the forward and
# dL/dX with an int8 GEMM for dL/dW, ("int8-fwd-dx") oneDNN's forward and dL/dX with the exact path's dL/dW, or
# ("int8-forward") oneDNN's forward with the exact path's backward.
LOWERINGS = {"im2col": {"DIRECT_CONV_MIN_PIXELS": 10**12, "INT8_MIN_CONV_BACKWARD_CHANNELS": 1},
             "direct": {"DIRECT_CONV_MIN_PIXELS": 1, "INT8_MIN_CONV_BACKWARD_CHANNELS": 1},
             "direct-fwd-dx": {"DIRECT_CONV_MIN_PIXELS": 1, "INT8_MIN_CONV_BACKWARD_CHANNELS": 10**6,
                               "INT8_MIN_CONV_INPUT_GRAD_CHANNELS": 1},
             "direct-forward": {"DIRECT_CONV_MIN_PIXELS": 1, "INT8_MIN_CONV_BACKWARD_CHANNELS": 10**6,
                                "INT8_MIN_CONV_INPUT_GRAD_CHANNELS": 10**6}}
NARROW_LABELS = {"direct-fwd-dx": "int8-fwd-dx", "direct-forward": "int8-forward"}  # the others: "int8"


@pytest.fixture(params=LOWERINGS)
def conv_lowering(request, monkeypatch):
    for name, value in LOWERINGS[request.param].items():
        monkeypatch.setattr(kernel_rule, name, value)
    yield request.param
    torch._dynamo.reset()  # compiled graphs guard on the patched rule: do not leave them to fill the recompile limit


LAYERS = {  # name: (layer, input); inputs >= 0 use the unsigned activation grid, the others the symmetric one
    "linear": (lambda: nn.Linear(96, 80), lambda: torch.randn(4, 7, 96).relu()),
    "linear-signed": (lambda: nn.Linear(64, 72, bias=False), lambda: torch.randn(6, 64)),
    "conv1x1": (lambda: nn.Conv2d(64, 72, 1), lambda: torch.randn(4, 64, 6, 6).relu()),
    "conv1x1-stride2": (lambda: nn.Conv2d(64, 72, 1, stride=2, bias=False), lambda: torch.randn(4, 64, 9, 9)),
    "conv3x3": (lambda: nn.Conv2d(16, 24, 3, padding=1), lambda: torch.randn(4, 16, 8, 8).relu()),
    "conv3x3-stride2": (lambda: nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False),
                        lambda: torch.randn(4, 16, 9, 9)),
    "conv3x3-stride2-even": (lambda: nn.Conv2d(16, 32, 3, stride=2, padding=1), lambda: torch.randn(3, 16, 8, 8).relu()),
    "conv3x3-nopad": (lambda: nn.Conv2d(24, 16, 3), lambda: torch.randn(2, 24, 7, 7).relu()),
    "conv5x3-stride-2x1": (lambda: nn.Conv2d(16, 16, (5, 3), stride=(2, 1), padding=(2, 1)),
                           lambda: torch.randn(2, 16, 10, 7)),
    "conv1x1-padded": (lambda: nn.Conv2d(16, 16, 1, padding=1), lambda: torch.randn(2, 16, 5, 5).relu()),
    "conv3x3-depthwise": (lambda: nn.Conv2d(32, 32, 3, padding=1, groups=32), lambda: torch.randn(2, 32, 6, 6)),
    "conv3x3-narrow": (lambda: nn.Conv2d(8, 16, 3, padding=1), lambda: torch.randn(2, 8, 6, 6).relu()),
}
# depthwise / grouped convolutions, padding >= kernel size and layers narrower than the rule run "exact"
EXPECTED_INT8_CHOICE = {"linear": "int8", "linear-signed": "int8", "conv1x1": "int8", "conv1x1-stride2": "int8",
                        "conv3x3": "int8", "conv3x3-stride2": "int8", "conv3x3-stride2-even": "int8",
                        "conv3x3-nopad": "int8", "conv5x3-stride-2x1": "int8", "conv1x1-padded": "exact",
                        "conv3x3-depthwise": "exact", "conv3x3-narrow": "exact"}


def run_layer(name, kernel, *, bits=8, autocast=False, channels_last=False, grid="symmetric", fused=True):
    """(output, dL/dX, dL/dW, dL/db, dL/du_A, dL/ds_W) of one quantized layer; the same weights, input, output
    gradient and rounding noise for every kernel."""
    make_layer, make_input = LAYERS[name]
    torch.manual_seed(0)
    layer = make_layer()
    x = make_input()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model = quantize_(nn.Sequential(layer), QuantSpec(w_bits=bits, a_bits=bits, g_bits=bits, keep_first_last=False,
                                                      kernel=kernel, weight_grid=grid, fused=fused))
    q = model[0]
    with torch.no_grad():
        model(x)  # first batch: initialise s_W and u_A
    x = x.requires_grad_()
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = model(x)
    g = torch.randn(y.shape)
    (y.float() * g).sum().backward()
    bias_grad = None if q.bias is None else q.bias.grad
    return q.kernel, [y.float(), x.grad, q.weight.grad, bias_grad, q.aq.upper.grad, q.wq.scale.grad]


def assert_all(check, a, b):
    for i, (u, v) in enumerate(zip(a, b)):
        assert (u is None) == (v is None), i
        if u is not None:
            assert check(u, v), f"output {i}: max diff {(u - v).abs().max().item()}"


@pytest.mark.parametrize("name", LAYERS)
def test_int8_equals_exact_without_tolerance(name, conv_lowering):
    choice, int8 = run_layer(name, "int8")
    assert choice == EXPECTED_INT8_CHOICE[name]
    _, exact = run_layer(name, "exact")
    assert_int8_equals_exact(int8, exact)  # y, dL/dX, dL/dW, dL/db equal; the interval gradients to rounding


@pytest.mark.parametrize("name", ["conv1x1", "conv1x1-stride2", "conv3x3", "conv3x3-stride2"])
def test_int8_equals_exact_on_channels_last_inputs(name, conv_lowering):
    int8, exact = run_layer(name, "int8", channels_last=True)[1], run_layer(name, "exact")[1]
    assert_int8_equals_exact(int8, exact)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("name", LAYERS)
def test_exact_equals_fake_in_float32_up_to_accumulation_order(name, bits):
    kernel, exact = run_layer(name, "exact", bits=bits)
    assert kernel == "exact"
    _, fake = run_layer(name, "fake", bits=bits)
    # The interval gradients sum g * (x_hat - x), differences of nearly equal numbers: the fake path's
    # x_hat = k*step + lo carries an error of ulp(u), about 2^(b-1) times larger relative to x_hat - x than to x.
    close = [lambda u, v: torch.allclose(u, v, rtol=1e-5, atol=1e-5 * v.abs().max().item())] * 4 + \
            [lambda u, v: torch.allclose(u, v, rtol=1e-3, atol=1e-6)] * 2
    for i, (u, v) in enumerate(zip(exact, fake)):
        if u is not None:
            assert close[i](u, v), f"output {i}: max diff {(u - v).abs().max().item()}"


@pytest.mark.parametrize("bits", [2, 8])
@pytest.mark.parametrize("name", ["linear", "linear-signed", "conv1x1-stride2", "conv3x3", "conv3x3-stride2"])
def test_the_signed_weight_grid_gives_int8_equal_to_exact_equal_to_fake(name, bits, conv_lowering):
    """quant.weight_grid=signed (2^b weight codes down to -2^(b-1): -128 at 8 bits, the edge of int8)."""
    choice, int8 = run_layer(name, "int8", bits=bits, grid="signed")
    assert choice == EXPECTED_INT8_CHOICE[name]
    _, exact = run_layer(name, "exact", bits=bits, grid="signed")
    assert_int8_equals_exact(int8, exact)
    _, fake = run_layer(name, "fake", bits=bits, grid="signed")
    for i, (u, v) in enumerate(zip(exact, fake)):  # tolerances as in the symmetric test above
        if u is not None:
            close = torch.allclose(u, v, rtol=1e-5, atol=1e-5 * v.abs().max().item()) if i < 4 else \
                torch.allclose(u, v, rtol=1e-3, atol=1e-6)
            assert close, f"output {i}: max diff {(u - v).abs().max().item()}"


@pytest.mark.parametrize("kernel", ["exact", "int8"])
@pytest.mark.parametrize("name", ["linear", "conv1x1-stride2", "conv3x3"])
def test_under_bf16_autocast_every_operand_is_an_integer_code_and_results_match_fp32(name, kernel, conv_lowering):
    # the reference quantizers in both runs: under the recorder (a dispatch mode) quant.fused cannot compile, and
    # its noise (a hash) differs from the reference's torch.rand
    with OperandRecorder() as recorder:
        _, amp = run_layer(name, kernel, autocast=True, fused=False)
    _, fp32 = run_layer(name, kernel, fused=False)
    assert_all(lambda u, v: torch.allclose(u, v, rtol=1e-6, atol=1e-6 * v.abs().max().item()), amp, fp32)
    assert len(recorder.operands) >= 3  # forward, dL/dX, dL/dW (the initialising no-grad call adds one)
    assert_integer_operands(recorder.operands)  # no bf16 (nothing off the grid), integer codes


def test_resnet20_runs_its_narrow_convolutions_int8_but_for_dw_and_the_64_channel_ones_int8():
    choices = kernel_choices(quantized_model(lambda: resnet20(num_classes=10), "int8"))
    narrow = [name for name, kind in choices.items() if kind == "int8-fwd-dx"]
    assert len(narrow) == 13 and all(n.startswith(("layer1.", "layer2.")) for n in narrow[:12])
    assert narrow[12] == "layer3.0.conv1"  # 32 -> 64: narrower than the backward's rule on its input side
    assert [n for n, kind in choices.items() if kind == "int8"] == [f"layer3.{b}.conv{c}" for b, c in
                                                                     [(0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]]


@pytest.mark.parametrize("min_pixels, input_grad_channels, ops", [
    (1, 16, ["quant.direct_conv"] * 2 + ["quant.direct_conv", "aten.convolution_backward"]),  # the default rule
    (1, 10**6, ["quant.direct_conv"] * 2 + ["aten.convolution_backward"]),
    (10**12, 16, ["aten.convolution"] * 2 + ["aten.convolution_backward"])])
def test_a_narrow_int8_convolution_runs_dw_exact_and_runs_exact_without_onednn(monkeypatch, min_pixels,
                                                                              input_grad_channels, ops):
    """conv3x3 (16 -> 24) is narrower than INT8_MIN_CONV_BACKWARD_CHANNELS: where it has the pixels, oneDNN's int8
    forward and (from INT8_MIN_CONV_INPUT_GRAD_CHANNELS) dL/dX, and the exact path's float32 convolution_backward
    for dL/dW alone (or dL/dX and dL/dW); the exact path's float32 convolutions throughout otherwise."""
    monkeypatch.setattr(kernel_rule, "DIRECT_CONV_MIN_PIXELS", min_pixels)
    monkeypatch.setattr(kernel_rule, "INT8_MIN_CONV_INPUT_GRAD_CHANNELS", input_grad_channels)
    with OperandRecorder() as recorder:  # the reference quantizers in both runs (the same noise), as above
        choice, int8 = run_layer("conv3x3", "int8", fused=False)
    assert choice == "int8"
    # the initialising no-grad call, the forward, then the backward's ops
    assert [func.removesuffix(".default") for func, _ in recorder.operands] == ops
    backward = recorder.operands[len(ops) - 1][1]  # convolution_backward: (dL/dY, input, weight) as float32 codes
    assert all(t.dtype == torch.float32 for t in backward)
    if ops[2] == "quant.direct_conv":  # dL/dX: uint8 gradient codes + 128 and the int8 flipped weight
        assert [t.dtype for t in recorder.operands[2][1]] == [torch.uint8, torch.int8]
    _, exact = run_layer("conv3x3", "exact", fused=False)
    assert_all(torch.equal, int8[:4], exact[:4])
    torch._dynamo.reset()


def test_the_fake_path_is_unchanged_by_default():
    assert QuantSpec(w_bits=4, a_bits=4, g_bits=4).kernel == "fake"
    kernel, _ = run_layer("linear", "fake")
    assert kernel == "fake"


def test_int32_accumulation_is_split_where_it_could_overflow():
    k = 2 * INT32_SAFE_K + 3  # 132,625 products of -128 * -127 sum to 2.16e9 > 2^31
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((k, 3), -127, dtype=torch.int8)
    assert torch.equal(int_matmul(a, b), a.long() @ b.long())


@pytest.mark.parametrize("m,k,n", [(16, 66311, 8), (1, 3, 5), (24, 8, 8)])
def test_the_padding_cuda_int_mm_needs_leaves_the_product_unchanged(m, k, n):
    """CUDA's _int_mm wants more than 16 rows and K, N multiples of 8 (seen on an H200): zero padding meets them."""
    from quant.im2col import int_mm
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=gen)
    assert torch.equal(int_mm(a, b, pad=True).long(), a.long() @ b.long())


def quantized_model(make, kernel):
    torch.manual_seed(0)
    return quantize_(make(), QuantSpec(w_bits=8, a_bits=8, g_bits=8, grad=LBTPolicy(), kernel=kernel))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 96), nn.GELU(),
                         nn.Linear(96, 10))


# Model level, fake vs int8: each layer agrees to float32 accumulation order, but a round-to-nearest code sits
# at a rounding boundary now and then, and BatchNorm amplifies the 1e-7 difference of the layer before it: in a
# ResNet-20 forward (8 bits) one activation code of 131,072 differs at the second quantized conv and 2,152 of
# 65,536 at the eighth, and the first losses differ by 1.6e-4. Two SGD steps at lr 0.1 on one batch of 8 (loss
# 3.98 -> 0.24) compound those flips through the stochastic rounding: over 8 noise seeds the losses after them
# differed by at most 0.011, so they are compared to 0.03 (a backward that did not train would miss by 3).
# int8 vs exact, which compute the same codes, agree to float32 rounding: ResNet-20's dL/dW sums 8,192 products
# of codes, past float32's 2^24, which exact rounds and int8 does not (2.2e-6 after two steps on an AVX2 CPU).
@pytest.mark.parametrize("make, shape, int8_layers, fake_tolerance, exact_rel", [
    (resnet20, (8, 3, 32, 32), 18, dict(abs=0.03), 1e-5), (mlp, (8, 3, 8, 8), 2, dict(rel=1e-4), 1e-6)])
def test_two_training_steps_on_the_int8_path_give_the_fake_path_losses(make, shape, int8_layers, fake_tolerance,
                                                                       exact_rel, conv_lowering):
    if make is resnet20 and conv_lowering != "im2col" and not VNNI:
        pytest.skip("without VNNI oneDNN's direct int8 convolution saturates 8-bit ResNet-20 sums")
    torch.manual_seed(0)
    x, y = torch.randn(shape), torch.randint(0, 10, (shape[0],))
    losses = {}
    for kernel in ("fake", "exact", "int8"):
        model = quantized_model(make, kernel)
        if kernel == "int8":
            label = NARROW_LABELS.get(conv_lowering, "int8") if make is not mlp else "int8"
            assert list(kernel_choices(model).values()).count(label) == int8_layers
        loss_fn = lambda: nn.functional.cross_entropy(model(x), y)  # noqa: E731
        torch.manual_seed(1)
        warmup_grad_intervals(model, loss_fn)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        losses[kernel] = []
        for _ in range(2):
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[kernel].append(loss.item())
        losses[kernel].append(loss_fn().item())
    assert losses["int8"] == pytest.approx(losses["exact"], rel=exact_rel)
    assert losses["int8"][0] == pytest.approx(losses["fake"][0], rel=1e-3)
    assert losses["int8"] == pytest.approx(losses["fake"], **fake_tolerance)


@pytest.mark.parametrize("kernel", ["exact", "int8"])
def test_compiled_integer_layers_match_eager(kernel, conv_lowering):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    eager = quantized_model(lambda: nn.Sequential(  # 3x3 stride 2, 1x1 and linear "int8" (first and last stay fp)
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 1),
        nn.ReLU(), nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 10)), kernel)
    conv = NARROW_LABELS.get(conv_lowering, kernel) if kernel == "int8" else kernel
    assert list(kernel_choices(eager).values()) == [conv, kernel, kernel]
    loss = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    warmup_grad_intervals(eager, lambda: loss(eager))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    loss_c, loss_e = loss(compiled), loss(eager)
    assert loss_c.item() == pytest.approx(loss_e.item(), rel=1e-5)
    loss_c.backward()
    loss_e.backward()
    for (name, p), q in zip(compiled_model.named_parameters(), eager.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # compiled noise is a hash, not torch.rand: gradients agree in distribution, not element by element
    assert compiled_model[2].gq.gamma.item() == pytest.approx(eager[2].gq.gamma.item(), abs=2e-3)
