"""Fixed-point training with quantized weights, activations and gradients (LBT, Kim et al., ECCV 2024).

Three layers (STYLE.md point 5): pure grid functions (quant.primitives), small autograd pieces (quant.forward,
quant.gradient) and a module swap (quant.layers, quant.convert). Gradient-interval policies live in quant.grad
and are selected by configs/quant/grad/<stem>.yaml.
"""
from quant.convert import quant_parameters, quantize_
from quant.layers import QConv2d, QLinear
from quant.spec import QuantSpec
from quant.stats import drain_grad_stats, set_recording
from quant.warmup import warmup_grad_intervals

__all__ = ["QConv2d", "QLinear", "QuantSpec", "drain_grad_stats", "quant_parameters", "quantize_",
           "set_recording", "warmup_grad_intervals"]
