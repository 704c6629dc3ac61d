"""torch.compile as the trainer and the benchmarks call it: Inductor, plus one joint-graph pass for CPU graphs.

The pass, RecomputeCpuMasks: Inductor's CPU code (torch 2.14) stores a bool tensor some 40x slower than a float
one (each vector of a float mask goes to bool through a generic, scalar conversion; compiled on 2 threads,
relu of a 128x16x28x28 tensor takes 0.2 ms, relu and its `<= 0` mask 11 ms). The min-cut partitioner saves a bool
mask for the backward whenever that is the smallest thing to save: ReLU's mask, when nothing in the backward reads
the ReLU's output. That is the case under APT, whose straight-through activation quantizer reads nothing in
backward (docs/methods.md §4.2): 1.34x a fixed-point step before this pass, 1.1x after. It marks every bool
pointwise result of a CPU graph that has the shape of a batch (2+ dims) must-recompute, so the partitioner saves
the float tensor it is computed from and the backward kernel recomputes the mask on the fly, as it already does
when that float tensor is saved anyway (FP32, the fixed-point quantizers). Graphs on CUDA are left alone (bool
stores are fast there, and a saved mask is a quarter of the memory).
"""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import torch
import torch.fx
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.utils.checkpoint import CheckpointPolicy


def _is_cpu_batch_mask(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    return (node.op == "call_function" and isinstance(val, torch.Tensor) and val.dtype == torch.bool
            and val.device.type == "cpu" and val.dim() >= 2
            and torch.Tag.pointwise in getattr(node.target, "tags", ()))


class RecomputeCpuMasks(CustomGraphPass):
    """Inductor joint-graph pass: bool pointwise results of CPU graphs are recomputed in backward, never saved."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in graph.nodes:
            if _is_cpu_batch_mask(node):
                node.meta["recompute"] = CheckpointPolicy.MUST_RECOMPUTE

    def uuid(self) -> str:  # Inductor's FX graph cache keys compiled graphs on it: change it with the pass
        return "lowbit.runtime.compile.RecomputeCpuMasks/1"


def compile_model(module: torch.nn.Module) -> torch.nn.Module:
    """torch.compile(module) with the CPU mask pass (module notes); the options apply to this module's graphs only.

    A model whose forward is partly data-dependent names its dense, fixed-shape submodules in `compile_targets`
    (e.g. FCOS: its backbone, models/detection.py); only those are compiled, in place (their state_dict
    keys do not change), and `module` is returned as it is. Compiling the whole detector instead spent minutes on
    graph breaks (`.item()`) and Inductor failures (`aten.nonzero`) in target matching, losses and NMS, code that
    holds no quantized layer and gains nothing from compilation. A DistributedDataParallel's inner model counts.
    """
    options = {"joint_custom_pre_pass": RecomputeCpuMasks()}
    inner = module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
    targets = getattr(inner, "compile_targets", None)
    if targets is None:
        return torch.compile(module, options=options)
    for name in targets:
        inner.get_submodule(name).compile(options=options)
    return module


class CompileTally(NamedTuple):
    """Process-wide compile counters; a run diffs the tally at its end against the one at its start."""
    fallbacks: Counter[str]  # eager_fallbacks()
    seconds: float  # compile_seconds()


def fresh_compile_state() -> CompileTally:
    """Start a run with dynamo's caches empty and return the tally so far (to diff at the end).

    A Hydra multirun trains its jobs one after another in one process: the earlier jobs' graphs (of models that no
    longer exist) count against dynamo's limit of 8 graphs per code object; past it every later job's model runs
    eagerly, and only the job that crossed it records "Dynamo recompile limit exceeded" (seen in
    results/grad_baselines, made before this reset: from the third job of each multirun on)."""
    torch._dynamo.reset()
    return compile_tally()


def compile_tally() -> CompileTally:
    return CompileTally(eager_fallbacks(), compile_seconds())


def compile_report(since: CompileTally, compiled: bool) -> dict:
    """A run's summary fields: `eager_fallbacks` (a compiled run's, else None) and `compile_s`, since `since`."""
    now = compile_tally()
    return {"eager_fallbacks": dict(now.fallbacks - since.fallbacks) if compiled else None,
            "compile_s": round(now.seconds - since.seconds, 1)}


def compile_seconds() -> float:
    """Seconds this process spent compiling so far: dynamo's frames (tracing, AOT autograd, Inductor's forward
    graphs) and the backward graphs Inductor compiles at their first use; the fused eager quantizers count too."""
    return torch._dynamo.utils.calculate_time_spent()["total_wall_time"]


def eager_fallbacks() -> Counter[str]:
    """Why compiled code ran eagerly, so far in this process: dynamo's graph breaks and backend failures (an op
    Inductor cannot lower makes dynamo run that frame eagerly, with only a warning), each reason's first line, with
    counts. The trainer stores a run's increment in its summary, so a slow compiled run says why."""
    reasons: Counter[str] = Counter()
    for table in ("graph_break", "unimplemented"):
        for message, count in torch._dynamo.utils.counters[table].items():
            reasons[str(message).strip().splitlines()[0]] += count
    return reasons
