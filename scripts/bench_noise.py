"""What the gradients' stochastic-rounding noise costs a quantized training step: an ablation, not a training mode.

The integer gradient grid rounds stochastically, floor(t + u) with u ~ U[0, 1) per element (docs/methods.md §1.2);
under torch.compile on the CPU u is a vectorised integer hash (quant.primitives.hashed_uniform_like). This script
times one run's step with that noise and with u = 0.5 (round half up: the same kernels, no random numbers), in one
process, interleaved, beside FP32, so the ratios show how much of the quantized step's distance to FP32 the noise
is. The constant-noise row is a measurement only: it trains with biased gradients and is not offered as a setting.

    python scripts/bench_noise.py --models resnet20,resnet18 --kernel int8 --out results/bench/cpu_noise.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time

import torch
import torch._dynamo

import quant.primitives
from scripts.bench_common import emit_report
from scripts.bench_step import MODELS, Config


class Noise:
    """The switch the patched quant.primitives.uniform_like reads; torch.compile guards on it (one graph each)."""
    constant = False


def _uniform_like(hashed):
    def uniform_like(t):
        return torch.full_like(t, 0.5) if Noise.constant else hashed(t)
    return uniform_like


def _time(step, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def bench_model(model: str, args) -> list[str]:
    _, shape, batch, title = MODELS[model]
    batch, image = args.batch_size or batch, shape[1]
    fp32 = Config("fp32", args.bits, torch.device("cpu"), batch, image, True, model)
    quantized = Config(args.policy, args.bits, torch.device("cpu"), batch, image, True, model, args.kernel)
    rows = {  # label: step
        "FP32, eager": lambda: fp32.step(False),
        "FP32, compiled": lambda: fp32.step(True),
        f"W{args.bits}A{args.bits}G{args.bits} {args.policy}, compiled, hashed noise": lambda: quantized.step(True),
        f"W{args.bits}A{args.bits}G{args.bits} {args.policy}, compiled, u = 0.5 (ablation)": lambda: quantized.step(True),
    }
    constant = [False, False, False, True]
    times = {label: [] for label in rows}
    for _ in range(1 + args.rounds):  # a warm-up round (compiles every variant), then the measured rounds
        for (label, step), const in zip(rows.items(), constant):
            Noise.constant = const
            times[label] += _time(step, args.steps)
    median = {label: statistics.median(t[args.steps:]) * 1e3 for label, t in times.items()}
    best = min(median["FP32, eager"], median["FP32, compiled"])
    lines = [f"### {title}, batch {batch}, {image}x{image}, quant.kernel={args.kernel}", "",
             "| step | ms | ratio to best FP32 |", "|---|---:|---:|"]
    lines += [f"| {label} | {ms:.1f} | {ms / best:.2f}x |" for label, ms in median.items()]
    noisy, flat = list(median.values())[2:]
    return lines + ["", f"The noise: {noisy - flat:.1f} ms of the quantized step ({(noisy - flat) / noisy:.0%}).", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20", help=f"comma-separated, from {sorted(MODELS)}")
    parser.add_argument("--bits", type=int, default=4, help="W = A = G bits")
    parser.add_argument("--policy", default="lbt", help="the gradient-interval policy (configs/quant/grad)")
    parser.add_argument("--kernel", default="int8", choices=("fake", "exact", "int8"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model's in bench_step.MODELS")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved measuring rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in MODELS for m in models):
        raise SystemExit(f"--models {args.models!r}: use names from {sorted(MODELS)}")
    torch.set_num_threads(args.threads)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    quant.primitives.uniform_like = _uniform_like(quant.primitives.uniform_like)
    load = os.getloadavg()
    lines = ["# The gradients' rounding noise in a quantized step", "",
             f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, threads {torch.get_num_threads()}, load average at start "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores",
             f"- median of {args.rounds * args.steps} steps per row ({args.rounds} interleaved rounds after one "
             "warm-up round); u = 0.5 rounds half up: an ablation that shows what the random numbers cost", ""]
    for model in models:
        lines += bench_model(model, args)
    emit_report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
