"""Time one training step of ResNet-20 with APT against fixed 8/8/8, as a run takes it.

Each row is a run built by the trainer's assembly (bench_common.build_run: the Hydra config composed as
`python train.py <overrides>` does, assemble.read_specs, assemble.assemble, train.fit's first-batch warm-up), on
1x28x28 images of the in-memory synthetic data set. A step is what train.fit does per batch:
`run.quant.before_step(step)` (APT's check schedule) then `Run.train_step` (forward, backward, optimizer steps, LR
schedules), counting steps as the trainer does, so APT's timed steps mix check steps and plain steps
(docs/methods.md §4.2) as a run past its first epoch does: one check per layer and role per epoch. Rows:

- `fixed 8/8/8`: the project's fixed point, `bits=8 quant/grad=minmax` (learnable W/A intervals, min-max clip);
- `apt8`: the APT format with its bits pinned (`quant=apt quant.precision.candidates=[8]`);
- `apt8-24`: APT (`quant=apt`: the shift held between checks), after a first epoch that promoted part of the
  roles (see --promote-steps), so the timed steps run the controller with mixed bit-widths;
- `apt8-24, shift every step`: the same with `quant.precision.hold_shift=false`: max|x| before every rounding, as
  this project's APT did before 2026-12.

Compiled rows are assembled with compile=true; the compile count after the timed steps shows whether bit
changes recompiled it (APT's bits are tensors). Steps are interleaved over rounds (row after row) so that load
from other processes spreads over all rows. Each round times a block of consecutive steps per row; ms/step is the
median over the rounds of block time / steps, and the ratio is to `fixed 8/8/8` in the same mode. The APT rows
also give the median check step and plain step, and how many of the timed steps were check steps.

    python scripts/bench_apt.py --out results/bench/apt_cpu.md
"""
from __future__ import annotations

import argparse
import os
import datetime
import platform
import shlex
import statistics
import sys
import time

import torch
import torch._dynamo

from quant.apt_layers import named_apt_quantizers
from scripts.bench_common import build_run, emit_report

ROWS = {"fixed 8/8/8": ["bits=8", "quant/grad=minmax"],
        "apt8": ["quant=apt", "quant.precision.candidates=[8]"],
        "apt8-24": ["quant=apt"],
        "apt8-24, shift every step": ["quant=apt", "quant.precision.hold_shift=false"]}


class Row:
    """One configuration: a run as train.py assembles it (compiled for compile=true), and its step count."""

    def __init__(self, name: str, overrides: list[str], batch_size: int, *, compiled: bool,
                 steps_per_epoch: int) -> None:
        self.name, self.count = name, 0
        # compile=true: assemble compiles the step model itself, as a compiled run's (each mode is its own row)
        self.run, self.batch = build_run(["model=resnet20", *overrides], batch_size=batch_size, image_size=28,
                                         in_channels=1, steps_per_epoch=steps_per_epoch, compile=compiled)
        self.model = self.run.model
        self.quantizers = [q for _, q in named_apt_quantizers(self.model)]

    def step(self) -> bool:
        """One training step, as train.fit takes it; whether it was an APT check step."""
        self.run.quant.before_step(self.count, logging=False)  # APT's check cadence
        self.count += 1
        self.run.train_step(self.batch)
        return any(q.checking for q in self.quantizers)

    def bits(self) -> str:
        """Mean bits per role over layers, e.g. `W 8.0 A 8.0 G 12.4` ("-" without APT)."""
        by_role: dict[str, list[float]] = {}
        for _, q in named_apt_quantizers(self.model):
            by_role.setdefault(q.role, []).append(q.bits.item())
        return " ".join(f"{r.upper()} {sum(v) / len(v):.1f}" for r, v in by_role.items()) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--modes", default="compile", help="comma-separated: eager, compile")
    parser.add_argument("--steps-per-epoch", type=int, default=469,
                        help="the runs' epoch length: APT checks each layer once per epoch after the first")
    parser.add_argument("--promote-steps", type=int, default=469,
                        help="untimed steps first: APT's first epoch (dense phase, adaptive checks, promotions)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per row per round")
    parser.add_argument("--out", help="also write the Markdown report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    started = time.perf_counter()
    rows, first_s = [], {}
    for mode in modes:
        for name, overrides in ROWS.items():
            row = Row(name, overrides, args.batch_size, compiled=mode == "compile",
                      steps_per_epoch=args.steps_per_epoch)
            t0 = time.perf_counter()
            for _ in range(args.promote_steps):
                row.step()
            first_s[name, mode] = time.perf_counter() - t0
            rows.append((mode, row))
            print(f"[{time.perf_counter() - started:5.0f}s] ready: {name} {mode}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    frames_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    blocks = {(mode, row.name): [] for mode, row in rows}
    cpu = {(mode, row.name): [] for mode, row in rows}
    single = {(mode, row.name, kind): [] for mode, row in rows for kind in (True, False)}
    for _ in range(args.rounds):
        for mode, row in rows:
            block, c0 = 0.0, time.process_time()
            for _ in range(args.steps):
                t0 = time.perf_counter()
                checked = row.step()
                dt = time.perf_counter() - t0
                block += dt
                single[mode, row.name, checked].append(dt)
            blocks[mode, row.name].append(block / args.steps)
            cpu[mode, row.name].append((time.process_time() - c0) / args.steps)
    recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - frames_before
    ms = {k: 1e3 * statistics.median(v) for k, v in blocks.items()}
    cpu_ms = {k: 1e3 * statistics.median(v) for k, v in cpu.items()}

    def kind_ms(mode: str, row: Row) -> str:
        if not row.quantizers:
            return "-"
        check, plain = single[mode, row.name, True], single[mode, row.name, False]
        return " / ".join(f"{1e3 * statistics.median(v):.1f}" if v else "-" for v in (check, plain)) + \
            f" ({len(check)} of {len(check) + len(plain)})"
    lines = [f"# Training-step time: APT vs fixed 8/8/8, ResNet-20 (1x28x28 inputs), batch {args.batch_size}, cpu", "",
             f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}",
             f"- step = Run.train_step (forward, backward, optimizer steps, schedules) on a fixed synthetic batch; "
             f"{args.rounds} interleaved rounds of {args.steps} consecutive steps per row, ms/step the median over "
             f"rounds of a round's mean, after {args.promote_steps} untimed steps; {args.steps_per_epoch} steps per "
             f"epoch; CPU ms = process "
             f"time (all threads) per step, less sensitive than wall time to other processes on the machine",
             f"- load average (1, 5, 15 min) before / after the timed steps: "
             f"{', '.join(f'{v:.2f}' for v in load_before)} / {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
             f"- graphs compiled during the timed steps (bit changes included): {recompiled}", "",
             "| config | mode | ms/step | ratio to fixed 8/8/8 | CPU ms/step | CPU ratio | "
             "check / plain step ms (median) (check steps of timed) | mean bits after the run | first steps incl. compile (s) |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for mode, row in rows:
        lines.append(f"| {row.name} | {mode} | {ms[mode, row.name]:.1f} | "
                     f"{ms[mode, row.name] / ms[mode, 'fixed 8/8/8']:.3f}x | {cpu_ms[mode, row.name]:.1f} | "
                     f"{cpu_ms[mode, row.name] / cpu_ms[mode, 'fixed 8/8/8']:.3f}x | {kind_ms(mode, row)} | {row.bits()} | "
                     f"{first_s[row.name, mode]:.0f} |")
    lines += ["", f"Total benchmark time: {time.perf_counter() - started:.0f} s."]
    report = "\n".join(lines) + "\n"
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
