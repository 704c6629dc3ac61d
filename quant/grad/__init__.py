"""Gradient-interval policies (docs/methods.md §1.3); configs/quant/grad/<stem>.yaml selects one via `_target_`."""
