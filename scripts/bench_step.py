"""Time one training step: FP32 vs W/A/G fixed point with each gradient-interval policy (and quant.kernel).

Everything runs in one process, so the ratios compare like with like: for each configuration (fp32, minmax,
fixed, mse, lbt) an eager step and a torch.compile'd step (the model is compiled, as assemble does for
compile=true; loss, backward and optimizer steps are outside) are timed. A step is `Run.train_step`, the step a run
takes (forward, cross-entropy, backward, fused SGD + the intervals' Adam with their LR schedules, the non-finite
check, zero_grad), of a run built by the trainer's assembly (bench_common.build_run: assemble.read_specs and
assemble.assemble on the Hydra config a run composes, then train.fit's first-batch warm-up), on the first batch of
the in-memory synthetic data set. Compilation and warm-up steps are excluded; the measured steps are interleaved
over rounds (configuration after configuration) so that load from other processes spreads over all of them, and
the median is reported.

Memory is what one step holds above its starting level: on CUDA the peak (torch.cuda.max_memory_allocated); on
CPU, where no resettable peak counter exists in-process, the live heap (glibc mallinfo2) at the end of the forward,
when all activations saved for backward are alive (see MemoryProbe).

Models (--models): CIFAR ResNet-20 (32x32, batch 128), timm ResNet-18 (112x112, batch 32), timm ViT-Ti/16
(224x224, batch 32). --kernel int8|exact runs the quantized rows on integer codes (docs/methods.md §1.9);
--split adds, per row, one profiled eager step split into GEMM (int8 _int_mm and fp32 matmul/conv kernels),
im2col (quant.im2col), quantize (the integer path's quantizers, quant.integer's record_function spans) and rest.

    python scripts/bench_step.py                          # CPU, 2 threads, prints a Markdown table
    python scripts/bench_step.py --device cuda --out results/bench/cuda.md
    python scripts/bench_step.py --models resnet20,resnet18,vit_tiny --bits 8,4 --policies lbt --kernel int8 --split
    python scripts/bench_step.py --bits 8 --policies minmax,minmax+fp8_e5m2,psq   # policy+format: a float G format

--conv-rules F/B,... repeats every quantized row once per channel rule of quant.integer (3x3 convolutions int8 in
the forward from F channels, in the backward from B), in the same process: the measurement behind that rule.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch._dynamo
import torch._inductor.config

from quant import kernel_rule
from runtime.cli import config_choices
from runtime.compile import compile_model
from scripts.bench_common import build_run, emit_report, sync

# The channel thresholds of quant.kernel_rule that a --conv-rules entry F/D/W sets, in that order
CONV_RULE = ("INT8_MIN_CONV_CHANNELS", "INT8_MIN_CONV_INPUT_GRAD_CHANNELS", "INT8_MIN_CONV_BACKWARD_CHANNELS")
POLICIES = config_choices("quant/grad")  # every configs/quant/grad/<name>.yaml, with its default hyper-parameters
MODELS = {  # name: (config overrides, input shape per sample, default batch size, title)
    "resnet20": (["model=resnet20"], (3, 32, 32), 128, "CIFAR ResNet-20"),
    "resnet18": (["model=resnet18"], (3, 112, 112), 32, "timm ResNet-18"),
    "vit_tiny": (["model=timm", "model.name=vit_tiny_patch16_224"], (3, 224, 224), 32, "timm ViT-Ti/16"),
}
GEMM_OPS = ("aten::_int_mm", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
            "aten::convolution_backward", "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
            "onednn::qconv_pointwise", "onednn::qconv_prepack")  # quant.direct_conv: the int8 conv and its reorder


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


class MemoryProbe:
    """MiB a step holds above its start: CUDA peak (max_memory_allocated); on CPU, live heap at the end of forward.

    CPU memory has no peak counter that can be reset in-process (malloc keeps freed pages resident), so on CPU
    the probe reads glibc's live allocation count (mallinfo2: in-use heap + mmapped blocks) right after the
    forward, when every activation saved for backward is alive; that is the step's peak up to transient buffers.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cpu":
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallinfo2.restype = _MallInfo2

    def _live(self) -> int:
        info = self.libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = self._live()
        self.mib = 0.0

    def after_forward(self) -> None:
        if self.device.type == "cpu":
            self.mib = (self._live() - self.base) / 2**20

    def stop(self) -> float:
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        return self.mib


def row_overrides(name: str, bits: int, model: str = "resnet20", kernel: str = "fake") -> list[str]:
    """The trainer's overrides for one row: FP32, or W/A/G = bits with the named gradient policy; `policy+format`
    (e.g. minmax+fp8_e5m2) quantizes the gradients to that float format instead of the integer grid."""
    if name == "fp32":
        return [*MODELS[model][0], "quant=fp32"]
    policy, _, grad_format = name.partition("+")
    quant = [f"bits={bits}", f"quant/grad={policy}", f"quant.kernel={kernel}"]
    return [*MODELS[model][0], *quant, *([f"quant.grad_format={grad_format}"] if grad_format else [])]


class Config:
    """One row: a run built by the trainer's assembly (bench_common.build_run), stepped by `Run.train_step`, eagerly
    and compiled."""

    def __init__(self, name: str, bits: int, device: torch.device, batch_size: int, image_size: int,
                 channels_last: bool, model: str = "resnet20", kernel: str = "fake",
                 conv_rule: tuple[int, int, int] | None = None) -> None:
        self.name, self.bits, self.conv_rule = name, bits, conv_rule
        overrides = [*row_overrides(name, bits, model, kernel), f"channels_last={str(channels_last).lower()}",
                     "optim.epochs=1000000"]  # 10**6 one-batch epochs: the LR schedules stay flat while timed
        saved = [getattr(kernel_rule, name) for name in CONV_RULE]
        for name, channels in zip(CONV_RULE, conv_rule or ()):  # read when assemble quantizes the layers
            setattr(kernel_rule, name, channels)
        try:
            self.run, self.batch = build_run(overrides, batch_size=batch_size, image_size=image_size,
                                             device=str(device))
        finally:
            for name, channels in zip(CONV_RULE, saved):
                setattr(kernel_rule, name, channels)
        self.choices = self.run.specs.labels.get("kernels", {})
        # Both modes step one model, optimizers and schedules; the compiled mode's step model is what assemble builds
        # for compile=true on one process (compile_model(model)), without building the row a second time.
        self.compiled = replace(self.run, step_model=compile_model(self.run.model))

    @property
    def label(self) -> str:
        if self.name == "fp32":
            return "FP32"
        rule = "" if self.conv_rule is None else (f", conv int8 fwd >= {self.conv_rule[0]}, dX >= {self.conv_rule[1]}, "
                                                  f"dW >= {self.conv_rule[2]}")
        return f"W{self.bits}A{self.bits}G{self.bits} {self.name}{rule}"

    def step(self, compiled: bool, probe: MemoryProbe | None = None) -> None:
        run = self.compiled if compiled else self.run
        hook = run.step_model.register_forward_hook(lambda *_: probe.after_forward()) if probe is not None else None
        run.train_step(self.batch)
        if hook is not None:
            hook.remove()


def time_split(config: Config) -> dict[str, float]:
    """ms of one profiled eager step: total (wall) and its GEMM, im2col, quantize and rest parts."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        config.step(False)
        total = time.perf_counter() - t0
    parts = {"gemm": 0.0, "im2col": 0.0, "quantize": 0.0}
    for event in prof.key_averages():
        if event.key in GEMM_OPS:
            parts["gemm"] += event.self_cpu_time_total
        elif event.key == "int8.im2col":
            parts["im2col"] += event.cpu_time_total
        elif event.key == "quant.quantize":
            parts["quantize"] += event.cpu_time_total
    split = {"total": 1e3 * total, **{k: v / 1e3 for k, v in parts.items()}}
    split["rest"] = split["total"] - sum(split[k] for k in parts)
    return split


def bench_model(model: str, args, device: torch.device, started: float) -> list[str]:
    """Build every row of one model, time them interleaved, return the Markdown section."""
    _, shape, default_batch, title = MODELS[model]
    batch_size = args.batch_size or default_batch
    channels_last = not args.no_channels_last
    modes = args.modes
    rows = [("fp32", 32, None)] + [(p, b, r) for b in args.bits for p in args.policies for r in args.conv_rules]
    # Every row compiles the same model code (forward, with and without statistics): past dynamo's limit of 8
    # graphs per code object the later rows would silently run their "compile" mode eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(rows))
    configs, compile_s = [], {}
    for name, bits, rule in rows:
        config = Config(name, bits, device, batch_size, shape[1], channels_last, model, args.kernel, rule)
        for mode in modes:
            t0 = time.perf_counter()
            for _ in range(args.warmup + (1 if mode == "compile" else 0)):  # the first compiled call compiles
                config.step(mode == "compile")
            sync(device)
            compile_s[config, mode] = time.perf_counter() - t0
        configs.append(config)
        print(f"[{time.perf_counter() - started:6.0f}s] ready: {model} {config.label}", file=sys.stderr, flush=True)

    times = {(c, m): [] for c in configs for m in modes}
    peaks = {key: 0.0 for key in times}
    for _ in range(args.rounds):
        for config in configs:
            for mode in modes:
                for _ in range(args.steps):
                    sync(device)
                    t0 = time.perf_counter()
                    config.step(mode == "compile")
                    sync(device)
                    times[config, mode].append(time.perf_counter() - t0)
    probe = MemoryProbe(device)  # measured apart from the timed steps, so reading it costs them nothing
    for config in configs:
        for mode in modes:
            probe.start()
            config.step(mode == "compile", probe)
            peaks[config, mode] = probe.stop()
    splits = {c: time_split(c) for c in configs} if args.split and device.type == "cpu" else {}

    median_ms = {key: 1e3 * statistics.median(v) for key, v in times.items()}
    fp32 = configs[0]
    best_fp32 = min(median_ms[fp32, m] for m in modes)
    quantized = [c for c in configs if c.name != "fp32"]
    counts = ""
    for config in quantized[:len(args.conv_rules)]:
        kinds = list(config.choices.values())
        rule = "" if config.conv_rule is None else f" (conv rule {'/'.join(map(str, config.conv_rule))})"
        counts += (f"quant.kernel={args.kernel}{rule}: {kinds.count('int8')} layers int8, "
                   f"{kinds.count('int8-fwd-dx')} int8-fwd-dx (dW exact), "
                   f"{kinds.count('int8-forward')} int8-forward (backward exact), {kinds.count('exact')} exact, "
                   f"{kinds.count('fake')} fake (kernel_choices); first/last layers stay FP32. ")
    counts = counts.strip()
    lines = [f"### {title}, batch {batch_size}, {shape[1]}x{shape[2]}", "", counts, "",
             "| config | mode | ms/step | ratio to FP32 (same mode) | ratio to best FP32 | ratio to min-max (same "
             "mode and bits) | memory (MiB) | first steps incl. compile (s) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    minmax = {(c.bits, c.conv_rule): c for c in quantized if c.name == "minmax"}
    for config in configs:
        for mode in modes:
            key = (config, mode)
            base = minmax.get((config.bits, config.conv_rule)) if config.name != "fp32" else None
            to_minmax = f"{median_ms[key] / median_ms[base, mode]:.2f}x" if base is not None else ""
            lines.append(f"| {config.label} | {mode} | {median_ms[key]:.1f} | {median_ms[key] / median_ms[fp32, mode]:.2f}x "
                         f"| {median_ms[key] / best_fp32:.2f}x | {to_minmax} | {peaks[key]:.0f} | {compile_s[key]:.0f} |")
    if splits:
        lines += ["", "One profiled eager step per row (ms; GEMM: int8 `_int_mm`, oneDNN int8 conv (weight reorder "
                  "included) and fp32 matmul/conv kernels, im2col: quant.im2col, quantize: the integer path's "
                  "quantizers; rest: everything else, profiler overhead included):", "",
                  "| config | step | GEMM | im2col | quantize | rest |", "|---|---:|---:|---:|---:|---:|"]
        for config, sp in splits.items():
            lines.append(f"| {config.label} | {sp['total']:.0f} | {sp['gemm']:.0f} | {sp['im2col']:.0f} "
                         f"| {sp['quantize']:.0f} | {sp['rest']:.0f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--models", default="resnet20", help=f"comma-separated, from {sorted(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 for resnet20, 32 otherwise")
    parser.add_argument("--bits", default="4", help="W = A = G bits, comma-separated for several")
    parser.add_argument("--policies", default="minmax,fixed,mse,lbt")
    parser.add_argument("--kernel", default="fake", choices=("fake", "exact", "int8"),
                        help="quant.kernel of the quantized rows (docs/methods.md §1.9)")
    parser.add_argument("--conv-rules", default="",
                        help="F/D/W,...: each quantized row once per quant.kernel_rule channel rule (int8 3x3 "
                             "convolutions: the forward from F channels, dL/dX from D, dL/dW from W; F/B means "
                             "F/B/B); default: the module's rule")
    parser.add_argument("--modes", default="eager,compile")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant after compilation")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved measuring rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--split", action="store_true", help="add a profiled step's GEMM/im2col/quantize split")
    parser.add_argument("--no-channels-last", action="store_true", help="channels_last=false: an NCHW model")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="disable Inductor's on-disk caches, so the compile column shows a cold compile")
    parser.add_argument("--note", default="", help="a line for the report, e.g. the machine's load")
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.no_compile_cache:
        torch._inductor.config.force_disable_caches = True
    args.modes = [m for m in args.modes.split(",") if m]
    args.policies = [p for p in args.policies.split(",") if p]
    args.bits = [int(b) for b in str(args.bits).split(",") if b]
    try:
        rules = [tuple(int(n) for n in r.split("/")) for r in args.conv_rules.split(",") if r]
    except ValueError:
        rules = None
    if rules is None or any(len(r) not in (2, 3) or min(r) < 1 for r in rules):
        raise SystemExit(f"--conv-rules {args.conv_rules!r}: use F/D/W (or F/B) positive channel counts, "
                         f"e.g. 16/16/64,16/64")
    args.conv_rules = [(r[0], r[1], r[-1]) for r in rules] or [None]
    models = [m for m in args.models.split(",") if m]
    unknown = ([n for n in args.policies if n.partition("+")[0] not in POLICIES] + [m for m in args.modes if m not in ("eager", "compile")]
               + [m for m in models if m not in MODELS])
    if unknown:
        raise SystemExit(f"unknown policy/mode/model {unknown}: use policies from {sorted(POLICIES)}, modes "
                         f"eager,compile, models from {sorted(MODELS)}")

    started = time.perf_counter()
    load = os.getloadavg()
    lines = [f"# Training-step time, {device.type}", "",
             f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}"
             + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
             + f", load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores",
             f"- median of {args.rounds * args.steps} steps per row ({args.rounds} interleaved rounds), "
             f"after {args.warmup} warm-up steps; channels_last={not args.no_channels_last}; "
             f"Inductor caches {'off (cold compiles)' if args.no_compile_cache else 'on'}",
             "- ratio: to FP32 in the same mode (eager to eager FP32, compiled to compiled FP32), and to the faster "
             "of FP32 eager and compiled",
             "- memory: MiB a step holds above its starting level ("
             + ("CUDA peak, max_memory_allocated" if device.type == "cuda"
                else "CPU live heap at the end of the forward, glibc mallinfo2: the activations saved for backward")
             + ")"]
    if args.note:
        lines.append(f"- {args.note}")
    lines.append("")
    for model in models:
        lines += bench_model(model, args, device, started)
    load = os.getloadavg()
    lines += [f"Load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; total benchmark time: "
              f"{time.perf_counter() - started:.0f} s."]
    emit_report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
