"""Fixed-point training with quantized weights, activations and gradients (LBT, Kim et al., ECCV 2024).

Three layers (STYLE.md point 5): pure grid functions (quant.primitives), small autograd pieces (quant.forward,
quant.gradient) and a module swap (quant.layers, quant.convert). Gradient-interval policies live in quant.grad
and are selected by configs/quant/grad/<stem>.yaml. Multi-process training keeps the quantizer state identical on
every rank with quant.sync (docs/methods.md §1.7). Adaptive precision training (APT, docs/methods.md §4) swaps in
the quantizers of quant.apt_layers (format and controller in quant.apt) when the QuantSpec has a `precision`.
"""
from quant.apt_layers import CheckSchedule, set_precision_schedule, set_precision_step
from quant.convert import quant_parameters, quantize_
from quant.kernel_rule import kernel_choices
from quant.layers import QConv2d, QLinear
from quant.spec import QuantSpec
from quant.stats import drain_grad_stats, set_recording
from quant.sync import apply_deferred_updates, set_deferred_updates, sync_quant_state
from quant.warmup import warmup_grad_intervals

__all__ = ["CheckSchedule", "QConv2d", "QLinear", "QuantSpec", "apply_deferred_updates", "drain_grad_stats",
           "kernel_choices", "quant_parameters", "quantize_", "set_deferred_updates", "set_precision_schedule",
           "set_precision_step", "set_recording", "sync_quant_state", "warmup_grad_intervals"]
