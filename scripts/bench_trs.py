"""Time one training step with a plain optimizer vs its transition-rate-scheduled twin (SGD vs SGDT, AdamW vs AdamT).

The steps are the trainer's own: each variant is the run `train.py optim=<name> compile=true` assembles
(bench_common.build_run: assemble.read_specs, assemble.assemble, train.fit's first-batch warm-up), stepped by
`Run.train_step`, so what is timed is what a run pays, TRS measurement (integer codes of every quantized weight,
compared with the previous step's) and U_t update included. CIFAR ResNet-20 on the first batch (32x32x3) of the
in-memory synthetic data set, the model compiled by the assembly (compile=true).
Variants are built once, warmed up (compilation excluded), then timed in interleaved rounds (variant after
variant), so that load from other processes spreads over all of them; the median is reported with the ratio of
each TRS variant to its base optimizer.

    python -m scripts.bench_trs --out results/bench/trs_cpu.md       # from the repository root
    python -m scripts.bench_trs --optims sgd,sgdt,adamw,adamt --bits 4,4,4 --device cuda
"""
from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import sys
import time

import torch

from scripts.bench_common import build_run, emit_report, sync

#: a TRS optimizer config -> the base optimizer config it is compared with
BASES = {"sgdt": "sgd", "adamt": "adamw"}


class Variant:
    """The run `train.py optim=<name> compile=true` assembles, stepped by Run.train_step."""

    def __init__(self, name: str, bits: tuple[int, int, int], device: torch.device, batch_size: int) -> None:
        self.name = name
        w, a, g = bits
        # compile=true: the compiled step model is assemble's own, as in a compiled run (every variant is compiled);
        # 10**4 one-batch epochs: the schedules span 10**4 steps, flat over the timed ones
        self.run, self.batch = build_run([f"optim={name}", f"quant.bits.w={w}", f"quant.bits.a={a}",
                                          f"quant.bits.g={g}", "logger.wandb.mode=disabled", "optim.epochs=10000"],
                                         batch_size=batch_size, image_size=32, device=str(device), compile=True)

    def step(self) -> None:
        self.run.train_step(self.batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--bits", default="2,2,32", help="W,A,G bits (32 = full precision), the TRS paper's 2,2,32")
    parser.add_argument("--optims", default="sgd,sgdt", help="optim configs; each TRS one is compared with its base")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant after compilation")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved measuring rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    bits = tuple(int(b) for b in args.bits.split(","))
    names = [n for n in args.optims.split(",") if n]
    missing = [BASES[n] for n in names if n in BASES and BASES[n] not in names]
    if len(bits) != 3 or missing:
        raise SystemExit(f"--bits takes W,A,G; --optims needs the base of every TRS optimizer (missing {missing})")

    started = time.perf_counter()
    variants, compile_s = [], {}
    for name in names:
        variant = Variant(name, bits, device, args.batch_size)
        t0 = time.perf_counter()
        for _ in range(args.warmup + 1):  # the first call compiles
            variant.step()
        sync(device)
        compile_s[name] = time.perf_counter() - t0
        variants.append(variant)
        print(f"[{time.perf_counter() - started:6.0f}s] ready: {name}", file=sys.stderr, flush=True)

    times = {v.name: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            for _ in range(args.steps):
                sync(device)
                t0 = time.perf_counter()
                variant.step()
                sync(device)
                times[variant.name].append(time.perf_counter() - t0)
    median_ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}

    label = "W{}A{}G{}".format(*bits)
    lines = [f"# Training-step time with transition-rate scheduling: CIFAR ResNet-20 {label}, batch "
             f"{args.batch_size}, {device.type}, compiled", "",
             f"- command: `python -m scripts.bench_trs {' '.join(shlex.quote(a) for a in sys.argv[1:])}`",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}"
             + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
             f"- median of {args.rounds * args.steps} steps per row ({args.rounds} interleaved rounds), after "
             f"{args.warmup} warm-up steps; a step is Run.train_step (forward, backward, optimizer steps, "
             "schedulers: for TRS the code count and the U_t update)",
             "- ratio: to the base optimizer (SGDT to SGD, AdamT to AdamW)", "",
             "| optim | ms/step | ratio to base | first steps incl. compile (s) |", "|---|---:|---:|---:|"]
    for name in names:
        base = BASES.get(name)
        ratio = f"{median_ms[name] / median_ms[base]:.3f}x" if base else "1 (base)"
        lines.append(f"| {name} | {median_ms[name]:.1f} | {ratio} | {compile_s[name]:.0f} |")
    lines += ["", f"Total benchmark time: {time.perf_counter() - started:.0f} s."]
    emit_report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
