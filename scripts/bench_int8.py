"""Time quant.kernel=fake|exact|int8 (docs/methods.md §1.9) against FP32 on CPU: whole training steps and layers.

Steps: timm ViT-Ti/16 (224x224, batch 32: linear layers dominate) and CIFAR ResNet-20 (32x32, batch 128: 3x3
convolutions), W8A8G8 with the LBT policy, each a run built by the trainer's assembly (bench_common.build_run:
assemble.read_specs and assemble.assemble on the Hydra config a run composes, train.fit's first-batch warm-up) and
stepped by `Run.train_step` on the first batch of the in-memory synthetic data set, eager and torch.compile'd (the
model is compiled, as assemble does for compile=true). All variants of a model live in one process; the timed
steps are interleaved over rounds (variant after variant), and the median is reported with its ratio to FP32 in
the same mode.

Layers (--layers): one quantized linear / 1x1-conv / 3x3-conv layer's forward + backward at the shapes of
ResNet-20, ResNet-18 (112x112) and ViT-Ti, exact vs int8: the measurement behind quant.kernel_rule.INT8_MIN_WIDTH and
INT8_MIN_CONV_CHANNELS (where int8 stops paying).

Convolutions (--convs): the three ops of a 3x3 convolution alone, on random codes: FP32 (oneDNN), oneDNN's direct
int8 convolution (quant.direct_conv, weights reordered on every call as in training) and im2col + int8 GEMM
(quant.im2col): the measurement behind quant.kernel_rule.DIRECT_CONV_MIN_PIXELS and INT8_MIN_CONV_BACKWARD_CHANNELS.

    python scripts/bench_int8.py --out results/bench/int8_cpu.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn as nn

from quant import QuantSpec, quantize_
from runtime.compile import compile_model
from scripts.bench_common import build_run, emit_report

MODELS = {  # name: (config overrides, input shape per sample, batch size)
    "vit_tiny": (["model=timm", "model.name=vit_tiny_patch16_224"], (3, 224, 224), 32),
    "resnet20": (["model=resnet20"], (3, 32, 32), 128),
}
VARIANTS = ("fp32", "fake", "exact", "int8")


class Variant:
    """One run built by the trainer's assembly, for one quant.kernel (or FP32), stepped eagerly and compiled."""

    def __init__(self, model_name: str, variant: str, bits: int, batch_size: int, image_size: int) -> None:
        quant = ["quant=fp32"] if variant == "fp32" else [f"bits={bits}", "quant/grad=lbt", f"quant.kernel={variant}"]
        self.name = variant
        self.run, self.batch = build_run([*MODELS[model_name][0], *quant, "optim.epochs=1000000"],  # flat LR
                                         batch_size=batch_size, image_size=image_size)
        self.choices = self.run.specs.labels.get("kernels", {})
        # Both modes step one model and its optimizers; compiled, the step model is what assemble builds for
        # compile=true on one process (compile_model(model)), without building the variant a second time.
        self.compiled = replace(self.run, step_model=compile_model(self.run.model))

    def step(self, compiled: bool) -> None:
        (self.compiled if compiled else self.run).train_step(self.batch)


def interleave(fns: dict, rounds: int, steps: int) -> dict:
    """Median seconds of each callable, timed in interleaved rounds."""
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(v) for key, v in times.items()}


def bench_steps(model_name: str, args, log) -> list[str]:
    _, shape, batch_size = MODELS[model_name]
    variants, first_s = [], {}
    for name in VARIANTS:
        v = Variant(model_name, name, args.bits, batch_size, shape[1])
        for mode in args.modes:
            t0 = time.perf_counter()
            for _ in range(args.warmup + (mode == "compile")):
                v.step(mode == "compile")
            first_s[name, mode] = time.perf_counter() - t0
        variants.append(v)
        log(f"ready: {model_name} {name}")
    median = interleave({(v.name, m): (lambda v=v, m=m: v.step(m == "compile")) for v in variants
                         for m in args.modes}, args.rounds, args.steps)
    int8 = next(v for v in variants if v.name == "int8").choices
    counts = {k: list(int8.values()).count(k) for k in ("int8", "int8-forward", "exact", "fake")}
    lines = [f"### {model_name}, batch {batch_size}, W{args.bits}A{args.bits}G{args.bits} LBT", "",
             f"quant.kernel=int8 runs: {counts['int8']} layers int8, {counts['int8-forward']} int8-forward, "
             f"{counts['exact']} exact, {counts['fake']} fake "
             f"(kernel_choices); first/last layers stay FP32.", "",
             "| variant | mode | ms/step | ratio to FP32 (same mode) | first steps incl. compile (s) |",
             "|---|---|---:|---:|---:|"]
    for v in variants:
        for m in args.modes:
            ms = 1e3 * median[v.name, m]
            lines.append(f"| {v.name} | {m} | {ms:.0f} | {median[v.name, m] / median['fp32', m]:.2f}x "
                         f"| {first_s[v.name, m]:.0f} |")
    return lines + [""]


def bench_layers(args, log) -> list[str]:
    """Forward + backward of one quantized layer, exact vs int8 vs an FP32 nn.Linear/Conv2d, at model shapes."""
    shapes = [  # (label, layer, input)
        ("ViT qkv 192->576, N=32*197", lambda: nn.Linear(192, 576), (32, 197, 192)),
        ("ViT proj 192->192", lambda: nn.Linear(192, 192), (32, 197, 192)),
        ("ViT fc1 192->768", lambda: nn.Linear(192, 768), (32, 197, 192)),
        ("ViT fc2 768->192", lambda: nn.Linear(768, 192), (32, 197, 768)),
        ("1x1 conv 16->16, 128x32x32", lambda: nn.Conv2d(16, 16, 1), (128, 16, 32, 32)),
        ("1x1 conv 32->32, 128x16x16", lambda: nn.Conv2d(32, 32, 1), (128, 32, 16, 16)),
        ("1x1 conv 64->64, 128x8x8", lambda: nn.Conv2d(64, 64, 1), (128, 64, 8, 8)),
        ("linear 32->32, N=6304", lambda: nn.Linear(32, 32), (32, 197, 32)),
        ("linear 64->64, N=6304", lambda: nn.Linear(64, 64), (32, 197, 64)),
        ("3x3 conv 16->16, 128x32x32", lambda: nn.Conv2d(16, 16, 3, padding=1), (128, 16, 32, 32)),
        ("3x3 conv 16->32 stride 2, 128x32x32", lambda: nn.Conv2d(16, 32, 3, 2, 1), (128, 16, 32, 32)),
        ("3x3 conv 32->32, 128x16x16", lambda: nn.Conv2d(32, 32, 3, padding=1), (128, 32, 16, 16)),
        ("3x3 conv 64->64, 128x8x8", lambda: nn.Conv2d(64, 64, 3, padding=1), (128, 64, 8, 8)),
        ("3x3 conv 64->64, 32x28x28", lambda: nn.Conv2d(64, 64, 3, padding=1), (32, 64, 28, 28)),
        ("3x3 conv 128->128, 32x14x14", lambda: nn.Conv2d(128, 128, 3, padding=1), (32, 128, 14, 14)),
        ("3x3 conv 256->256, 32x7x7", lambda: nn.Conv2d(256, 256, 3, padding=1), (32, 256, 7, 7)),
        ("3x3 conv 8->8, 128x32x32", lambda: nn.Conv2d(8, 8, 3, padding=1), (128, 8, 32, 32)),
    ]
    import quant.kernel_rule as kernel_rule
    saved = kernel_rule.INT8_MIN_WIDTH, kernel_rule.INT8_MIN_CONV_CHANNELS, kernel_rule.INT8_MIN_CONV_BACKWARD_CHANNELS
    # measure int8 (forward and backward) on every shape, whatever the rule says
    kernel_rule.INT8_MIN_WIDTH = kernel_rule.INT8_MIN_CONV_CHANNELS = kernel_rule.INT8_MIN_CONV_BACKWARD_CHANNELS = 1
    lines = ["### One layer, forward + backward (eager), exact and int8 vs FP32 layer", "",
             "3x3 convolutions: padding 1, int8 as quant.integer lowers it (direct from DIRECT_CONV_MIN_PIXELS "
             "output pixels, else im2col).", "",
             "| layer | fp32 ms | fake ms | exact ms | int8 ms | int8 / exact |", "|---|---:|---:|---:|---:|---:|"]
    try:
        for label, make, shape in shapes:
            torch.manual_seed(0)
            x = torch.randn(shape).relu()
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            fns = {}
            for kernel in ("fp32", "fake", "exact", "int8"):
                layer = make()
                if kernel != "fp32":
                    layer = quantize_(nn.Sequential(layer), QuantSpec(w_bits=8, a_bits=8, g_bits=8,
                                                                      keep_first_last=False, kernel=kernel))[0]
                    assert layer.kernel == kernel
                xx = x.clone().requires_grad_()
                layer(xx).sum().backward()  # initialise the intervals
                fns[kernel] = lambda layer=layer, xx=xx: layer(xx).square().sum().backward()
            t = interleave(fns, args.rounds, args.steps)
            lines.append(f"| {label} | {1e3 * t['fp32']:.1f} | {1e3 * t['fake']:.1f} | {1e3 * t['exact']:.1f} "
                         f"| {1e3 * t['int8']:.1f} | {t['int8'] / t['exact']:.2f} |")
            log(lines[-1])
    finally:
        kernel_rule.INT8_MIN_WIDTH, kernel_rule.INT8_MIN_CONV_CHANNELS, kernel_rule.INT8_MIN_CONV_BACKWARD_CHANNELS = saved
    return lines + [""]


def bench_convs(args, log) -> list[str]:
    """ms of the forward, dL/dX and dL/dW of one 3x3 convolution (padding 1): FP32 vs direct int8 vs im2col."""
    from quant.direct_conv import direct_conv, direct_conv_input_grad
    from quant.im2col import conv_forward, conv_input_grad, conv_weight_grad
    shapes = [(128, 16, 32, 1), (128, 16, 32, 2), (128, 32, 16, 1), (128, 64, 8, 1), (32, 64, 28, 1),
              (32, 128, 14, 1), (32, 128, 14, 2), (32, 256, 7, 1), (32, 512, 4, 1)]  # (B, C = O, H = W, stride)
    lines = ["### One 3x3 convolution's ops (padding 1), FP32 vs int8 codes", "",
             "direct: oneDNN int8 convolution incl. its weight reorder (quant.direct_conv); im2col: quant.im2col "
             "copy + `torch._int_mm`; output pixels = B x Ho x Wo.", "",
             "| B x C x H x W, stride | output pixels | fp32 fwd | fp32 dX | fp32 dW | direct fwd | direct dX "
             "| im2col fwd | im2col dX | im2col dW |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    zero = torch.tensor(0.0)
    for b, c, h, s in shapes:
        torch.manual_seed(0)
        ho = (h - 1) // s + 1
        x = torch.randn(b, c, h, h).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3)
        g = torch.randn(b, c, ho, ho).contiguous(memory_format=torch.channels_last)
        u8 = torch.randint(0, 256, (b, c, h, h), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        a_pad = torch.randint(-128, 128, (b, h + 2, h + 2, c), dtype=torch.int8)
        g_u8 = torch.randint(1, 256, (b, c, ho, ho), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        g8 = torch.randint(-127, 128, (b, ho, ho, c), dtype=torch.int8)
        w8 = torch.randint(-127, 128, (c, c, 3, 3), dtype=torch.int8)
        backward = lambda mask: torch.ops.aten.convolution_backward(  # noqa: E731
            g, x, w, None, [s, s], [1, 1], [1, 1], False, [0, 0], 1, mask)
        fns = {"fp32 fwd": lambda: torch.nn.functional.conv2d(x, w, None, s, 1),
               "fp32 dX": lambda: backward([True, False, False]),
               "fp32 dW": lambda: backward([False, True, False]),
               "direct fwd": lambda: direct_conv(u8, 0, w8, (s, s), (1, 1)),
               "direct dX": lambda: direct_conv_input_grad(g_u8, w8, (s, s), (1, 1), (h, h)),
               "im2col fwd": lambda: conv_forward(a_pad, w8, (s, s), zero),
               "im2col dX": lambda: conv_input_grad(g8, w8, (s, s), (1, 1), (h, h)),
               "im2col dW": lambda: conv_weight_grad(a_pad, g8, (3, 3), (s, s), zero)}
        for fn in fns.values():
            for _ in range(args.warmup):
                fn()
        t = interleave(fns, args.rounds, args.steps)
        lines.append(f"| {b}x{c}x{h}x{h}, {s} | {b * ho * ho} | "
                     + " | ".join(f"{1e3 * t[k]:.2f}" for k in fns) + " |")
        log(lines[-1])
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--models", default="vit_tiny,resnet20")
    parser.add_argument("--modes", default="eager,compile")
    parser.add_argument("--layers", action="store_true", help="also time single layers (the int8 rule)")
    parser.add_argument("--convs", action="store_true", help="also time one convolution's int8 ops (the lowering rule)")
    parser.add_argument("--no-steps", action="store_true", help="only the layer / convolution tables")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--note", default="", help="a line for the report, e.g. the machine's load")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - started:5.0f}s] {msg}", file=sys.stderr, flush=True)  # noqa
    load = os.getloadavg()
    lines = ["# quant.kernel fake / exact / int8 vs FP32 on CPU", "",
             f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
             f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) "
             f"on {os.cpu_count()} cores",
             f"- median of {args.rounds * args.steps} timed runs per row ({args.rounds} interleaved rounds) after "
             f"{args.warmup} warm-up steps; channels_last models and layer inputs, the steps on the loader's batch",
             "- ratio: to FP32 in the same mode, same process"]
    if args.note:
        lines.append(f"- {args.note}")
    lines.append("")
    if args.layers:
        lines += bench_layers(args, log)
    if args.convs:
        lines += bench_convs(args, log)
    if not args.no_steps:
        for model_name in [m for m in args.models.split(",") if m]:
            lines += bench_steps(model_name, args, log)
    load = os.getloadavg()
    lines.append(f"Load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; total "
                 f"{time.perf_counter() - started:.0f} s.")
    report = "\n".join(lines) + "\n"
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
