"""Fused eager quantizers: each quantizer's elementwise work compiled once as one small Inductor region.

In eager mode a quantizer is a chain of ATen ops, each a full pass over the tensor with its own temporary (scale,
round, clamp, rescale; the clipping mask, the interval gradient; g_max, the noise, the grid, the clipped fraction):
on ResNet-20 that made the W4A4G4 eager step 2.7x FP32. `fused(fn)` compiles such a pure function with
`torch.compile(fullgraph=True, dynamic=True)` on 1-D views: a handful of loops instead of 6-12 passes, one graph per
dtype and grid kind shared by every layer and layout, seconds to compile once (Inductor's on-disk cache after).

Numerics: the fused regions are the reference functions themselves, traced; every elementwise result is the
reference's bit for bit (tests/quant/test_fused.py). Two things differ, both as under compile=true:
- sums (the learnable interval's gradient, the clipped fraction's count is exact) add in Inductor's order;
- the gradients' stochastic-rounding noise on the CPU is quant.primitives' vectorised hash (seeded from the
  global generator, so a seeded run repeats) instead of torch.rand_like, which alone cost 7 ms per 2M elements.
`quant.fused=false` (configs/quant) runs the reference functions, as before this module.

Under torch.compile (compile=true) the wrapper calls the reference function, which Dynamo inlines into the model's
graph; recording and warm-up steps also run the reference (quant.gradient).
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
import torch._dynamo.config
import torch._dynamo.exc

F = TypeVar("F", bound=Callable)
_enabled = True
# Numbers specialised (see `fused`); up to RECOMPILE_LIMIT graphs per region (grid kinds x ranks of the flat
# layout: bits, weight grid, signed activations...), past it the reference function runs.
RECOMPILE_LIMIT = 32
# Tensors smaller than this run the reference functions: a region's call costs tens of microseconds of guards and
# its first compile seconds, which only pays on tensors of real training runs (ResNet-20's smallest at batch 128:
# 0.5M elements); tiny test models do not compile anything.
MIN_ELEMENTS = 65_536
_SPECIALISE_NUMBERS = torch._dynamo.config.patch(specialize_int=True, specialize_float=True,
                                                 recompile_limit=RECOMPILE_LIMIT)


def set_fused(enabled: bool) -> None:
    """Run the fused regions (True) or the reference functions (False) from now on in this process."""
    global _enabled
    _enabled = bool(enabled)


def fused(*, shaped_args: int, shaped_results: int) -> Callable[[F], F]:
    """Decorator: `fn` as one compiled region in eager mode (module notes); `fn` itself under torch.compile or when
    disabled. Its first `shaped_args` arguments are same-shaped tensors it treats elementwise (reductions over all
    their elements included): the region takes them as 1-D views in one memory order (flat_views) and gives its
    first `shaped_results` results back in the first argument's shape and layout. `.reference` is `fn`."""
    def wrap(fn: F) -> F:
        # Python numbers (bits, grid constants) are specialised, only the flat length is dynamic: with dynamic
        # numbers torch 2.14's FX graph cache handed a graph compiled for 15 grid steps to a call with 14
        # (tests/quant/test_fused.py repeats that sequence).
        compiled = _SPECIALISE_NUMBERS(torch.compile(fn, fullgraph=True, dynamic=True))

        @functools.wraps(fn)
        def call(*args, **kwargs):
            # under torch.compile Dynamo inlines fn; under a dispatch mode (FLOP counters, tests) it cannot compile;
            # a small tensor gains less than the region's call and first compile cost
            if not _enabled or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() \
                    or args[0].numel() < MIN_ELEMENTS:
                return fn(*args, **kwargs)
            first = args[0]
            # detached: the regions run without autograd, and requires_grad would otherwise be one more guard
            args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            try:
                results = compiled(*flat_views(*args[:shaped_args]), *args[shaped_args:], **kwargs)
            except torch._dynamo.exc.FailOnRecompileLimitHit:  # a process that met too many grid kinds
                return fn(*args, **kwargs)
            return (*(None if r is None else shaped_like(r, first) for r in results[:shaped_results]),
                    *results[shaped_results:])

        call.reference = fn
        return call  # type: ignore[return-value]
    return wrap


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def flat_views(first: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """The tensors' elements as 1-D views in one memory order, first's (contiguous when first is not dense; the
    others copied to that layout where theirs differs): what a fused elementwise region takes, so one dynamic
    dimension serves every layer and the loop vectorises whatever the layout. shaped_like(result, first) undoes it."""
    if not _dense(first):
        first = first.contiguous()
    views = []
    for t in (first, *others):
        if t is not first and (t.stride() != first.stride() or not _dense(t)):
            t = torch.empty_like(first, dtype=t.dtype).copy_(t)
        views.append(t.as_strided((t.numel(),), (1,)))
    return views


def shaped_like(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A fused region's 1-D result `flat`, computed on flat_views(like, ...), with like's shape and memory layout."""
    return flat.as_strided(like.shape, like.stride()) if _dense(like) else flat.view(like.shape)
