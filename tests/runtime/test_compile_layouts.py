"""A compiled channels-last quantized step keeps its gradients channels-last: an NCHW buffer among them makes
Inductor transpose it on every read (63 transposing loops in ResNet-20's int8 backward before these fixes)."""
import re

import pytest
import torch
import torch.nn as nn
from torch._inductor.utils import run_and_get_code

from models.resnet_cifar import ResNetCifar
from quant import QuantSpec, quantize_
from quant.grad.lbt import LBTPolicy
from quant import kernel_rule
from runtime.compile import compile_model


def nchw_buffers(code: str) -> list[tuple[int, ...]]:
    """Shapes of the 4-d buffers a compiled graph's wrapper lays out NCHW (contiguous strides)."""
    shapes = []
    for match in re.finditer(r"\(\((\d+), (\d+), (\d+), (\d+)\), \((\d+), (\d+), (\d+), (\d+)\)", code):
        n, c, h, w, *strides = map(int, match.groups())
        if c > 1 and h * w > 1 and strides == [c * h * w, h * w, w, 1]:
            shapes.append((n, c, h, w))
    return shapes


def compiled_step_code(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The generated code (forward and backward graphs) of one compiled forward + backward of `model`."""
    model(x).sum().backward()  # the quantizers' first-batch initialisation, eagerly
    compiled = compile_model(model)
    _, code = run_and_get_code(lambda: compiled(x).sum().backward())
    assert len(code) == 2  # one forward and one backward graph: nothing fell back to eager
    return code


def test_the_option_a_shortcut_leaves_no_nchw_gradient_between_stages(fresh_dynamo):
    # The slicing shortcut's backward (zeros, then a scatter) made every stage's residual gradient NCHW
    # (premise checked by hand: 4 NCHW buffers, 2 of them at the second stage's (16, 32, 8, 8)).
    torch.manual_seed(0)
    model = ResNetCifar(blocks=1)
    quantize_(model, QuantSpec(w_bits=8, a_bits=8, g_bits=8, grad=LBTPolicy(), kernel="exact"))
    model.to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    _, backward = compiled_step_code(model, x)
    assert (16, 32, 8, 8) not in nchw_buffers(backward)
    assert (16, 64, 4, 4) not in nchw_buffers(backward)


def test_an_int8_layers_backward_is_not_retraced_on_a_contiguous_gradient(fresh_dynamo, monkeypatch):
    # A stride query inside a custom Function's backward makes Dynamo retrace it on `grad.contiguous()`: an NCHW
    # copy of every int8 layer's output gradient, which everything after it then follows.
    clones = []

    def record_clones(graph):
        for node in graph.nodes:
            if node.target is torch.ops.aten.clone.default and node.meta["val"].shape == (8, 64, 24, 24):
                clones.append(node.kwargs.get("memory_format"))

    monkeypatch.setattr(kernel_rule, "int8_refusal", lambda: None)  # the trace, not the CPU's int8 speed, is tested
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(64, 8, 1))
    quantize_(model, QuantSpec(w_bits=8, a_bits=8, g_bits=8, grad=LBTPolicy(), kernel="int8", keep_first_last=False))
    assert model[2].kernel == "int8"
    model.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    with torch._inductor.config.patch(post_grad_custom_post_pass=record_clones):
        compiled_step_code(model, x)
    assert torch.contiguous_format not in clones
