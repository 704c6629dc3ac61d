"""Checks of what quant.kernel=exact|int8 promise (docs/methods.md §1.9), shared by tests/quant/test_integer.py
(small layers, CPU) and scripts/gpu_check.py (every quantized layer of a real model, on CUDA).

- OperandRecorder: the operands of every conv / matmul dispatched while it is active;
  LayerOperandRecorder: the same inside the quantized layers' forward and backward only, attributed to the layer,
  with each call's input and output gradient kept for a replay;
- assert_integer_operands: every operand is float32 / int8 / uint8 (nothing was rounded to bf16) and an integer
  of at most `bound` in magnitude, i.e. a code: the scales are applied after the op;
- layer_results / assert_int8_equals_exact: one layer's output and gradients for a given input and output
  gradient; int8 equals exact without tolerance (integer sums times the same scales), the interval gradients to
  float32 rounding (the same float products, possibly summed in another memory order).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode


class OperandRecorder(TorchDispatchMode):
    """Records the float / integer operands of every conv / matmul dispatched: `operands`, (op name, tensors)."""

    OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.convolution.", "aten.convolution_backward", "aten._int_mm",
           "quant.direct_conv")

    def __init__(self):
        super().__init__()
        self.operands: list[tuple[str, list[Tensor]]] = []

    def recording(self) -> bool:
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(self.OPS) and self.recording():
            self.operands.append((str(func), [a for a in args[:3] if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: QConv2d / QLinear} of a (possibly compiled) model: the layers quant.kernel_choices lists."""
    model = getattr(model, "_orig_mod", model)
    return {name: m for name, m in model.named_modules() if hasattr(m, "kernel") and hasattr(m, "gq")}


class LayerOperandRecorder(OperandRecorder):
    """OperandRecorder scoped to the quantized layers of `model` (eager): an op is recorded only inside a layer's
    forward or its autograd node's backward, and `where[i]` = (layer name, "forward" | "backward") of
    `operands[i]`. `calls` keeps every forward call's (layer name, input, output gradient), cloned, for
    layer_results; the output gradient is filled in when backward reaches the layer (None if it never does)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.layers = quantized_layers(model)
        self.where: list[tuple[str, str]] = []
        self.calls: list[dict] = []
        self._inside: tuple[str, str] | None = None
        self._handles = []

    def recording(self) -> bool:
        return self._inside is not None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.recording() and str(func).startswith(self.OPS):
            self.where.append(self._inside)
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _enter(self, name: str, phase: str) -> None:
        self._inside = (name, phase)

    def _leave(self, *_) -> None:
        self._inside = None

    def _hooks(self, name: str):
        def before(module, args):
            self.calls.append({"name": name, "x": args[0].detach().clone(), "g": None})
            self._enter(name, "forward")

        def after(module, args, y):
            self._leave()
            call = self.calls[-1]
            if y.grad_fn is not None:  # the layer's autograd node: its backward is the layer's backward

                def backward_begins(grad_outputs):
                    call["g"] = grad_outputs[0].detach().clone()
                    self._enter(name, "backward")

                y.grad_fn.register_prehook(backward_begins)
                y.grad_fn.register_hook(self._leave)

        return before, after

    def __enter__(self):
        for name, layer in self.layers.items():
            before, after = self._hooks(name)
            self._handles += [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return super().__exit__(*exc)


def assert_integer_operands(operands: list[tuple[str, list[Tensor]]], bound: float = 255) -> None:
    """Every operand is float32 / int8 / uint8 (no bf16: nothing off the grid) and an integer in [-bound, bound]."""
    for func, tensors in operands:
        for t in tensors:
            assert t.dtype in (torch.float32, torch.int8, torch.uint8), f"{func}: a {t.dtype} operand"
            t = t.float()
            assert torch.equal(t, t.round()), f"{func}: an operand that is not an integer code"
            assert t.abs().max() <= bound, f"{func}: a code of magnitude {t.abs().max().item()} > {bound}"


def layer_results(layer: nn.Module, x: Tensor, g: Tensor, *, seed: int = 1, autocast=nullcontext()) -> list:
    """(output, dL/dX, dL/dW, dL/db, dL/du_A, dL/ds_W) of one quantized layer for input x and output gradient g;
    the gradient's rounding noise is drawn after torch.manual_seed(seed). The layer's state moves (its gradient
    interval is updated in backward): pass a copy to compare kernels from the same state."""
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    with autocast:
        y = layer(x)
    y.backward(g)
    bias_grad = None if layer.bias is None else layer.bias.grad
    return [y.detach().float(), x.grad, layer.weight.grad, bias_grad, layer.aq.upper.grad, layer.wq.scale.grad]


def assert_int8_equals_exact(int8: list, exact: list) -> None:
    """layer_results of the int8 and the exact kernel: the op's results (output, dL/dX, dL/dW, dL/db) equal, the
    interval gradients (sums of float products over the same values, possibly in another memory order, NHWC)
    equal to float32 rounding."""
    for i, (u, v) in enumerate(zip(int8, exact)):
        assert (u is None) == (v is None), f"output {i}: None on one side only"
        if u is None:
            continue
        same = torch.equal(u, v) if i < 4 else torch.allclose(u, v, rtol=1e-5, atol=1e-6)
        assert same, f"output {i}: max diff {(u.float() - v.float()).abs().max().item()}"
