"""Time one training step of ResNet-20 with APT against fixed 8/8/8, built from the trainer's own pieces.

Each row composes the Hydra config the way `python train.py <overrides>` does and builds the step with train.py's
functions: `build_quant_spec`, `quantize_`, `set_precision_schedule`, `build_optimizers`, `warmup_grad_intervals`,
`precision_stepper` and `train_step` (forward, backward, optimizer steps, LR schedules), counting steps as the
trainer does, so APT's timed steps mix check steps and plain steps (docs/methods.md §4.2). Rows:

- `fixed 8/8/8`: the project's fixed point, `bits=8 quant/grad=minmax` (learnable W/A intervals, min-max clip);
- `apt8`: the APT format with its bits pinned (`quant=apt quant.precision.candidates=[8]`);
- `apt8-24`: APT (`quant=apt`), after a first phase that promoted part of the roles (see --promote-steps), so the
  timed steps run the controller with mixed bit-widths;
- `apt8-24, check every 4`: the same with `check_every=4`: diff_bit measured on every 4th step only
  (docs/methods.md §4.2); the other rows measure it every step (the default, the method as stated).

Compiled steps compile the model as train.py does; the compile count after the timed steps shows whether bit
changes recompiled it (APT's bits are tensors). Steps are interleaved over rounds (row after row) so that load
from other processes spreads over all rows. Each round times a block of consecutive steps per row; ms/step is the
median over the rounds of block time / steps, and the ratio is to `fixed 8/8/8` in the same mode. With --steps a
multiple of APT's check_every every block holds the same mix of check and plain steps (a median over single
steps would report the plain step alone); the APT rows also give the median check step and plain step.

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

import train
from quant import precision_stepper, quantize_, set_precision_schedule, warmup_grad_intervals
from quant.apt_layers import named_apt_quantizers
from runtime.compile import compile_model
from scripts.bench_common import compose_config, emit_report

ROWS = {"fixed 8/8/8": ["bits=8", "quant/grad=minmax"],
        "apt8": ["quant=apt", "quant.precision.candidates=[8]"],
        "apt8-24": ["quant=apt"],
        "apt8-24, check every 4": ["quant=apt", "quant.precision.check_every=4"]}


class Row:
    """One configuration: model, optimizers, schedulers and a compiled step model, as train.py builds them."""

    def __init__(self, name: str, overrides: list[str], batch, *, compiled: bool, steps_per_epoch: int) -> None:
        cfg = compose_config(["model=resnet20", "data=fashion_mnist", *overrides])
        self.name, self.batch = name, batch
        torch.manual_seed(0)
        self.task = train.build(cfg.task)
        self.model = train.build(cfg.model, num_classes=10, in_channels=1)
        quantize_(self.model, train.build_quant_spec(cfg))
        set_precision_schedule(self.model, steps_per_epoch=steps_per_epoch, epochs=cfg.optim.epochs)
        self.model.to(memory_format=torch.channels_last).train()
        self.optimizers, self.schedulers, self.params = train.build_optimizers(
            cfg, self.model, steps_per_epoch=steps_per_epoch, epochs=cfg.optim.epochs)
        warmup_grad_intervals(self.model, lambda: self.task.loss(self.model, batch))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.step_model = compile_model(self.model) if compiled else self.model
        self.count = 0
        self.precision_step = precision_stepper(self.model)  # as train.py: the quantizers are found once
        self.quantizers = [q for _, q in named_apt_quantizers(self.model)]

    def step(self) -> bool:
        """One training step; whether it was an APT check step."""
        self.precision_step(self.count)
        self.count += 1
        train.train_step(self.step_model, self.model, self.task, self.batch, self.optimizers, self.schedulers,
                         self.params)
        return any(q.checking for q in self.quantizers)

    def check_every(self) -> int | None:
        quantizers = named_apt_quantizers(self.model)
        return quantizers[0][1].policy.check_every if quantizers else None

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
    parser.add_argument("--promote-steps", type=int, default=20,
                        help="untimed steps first, in the dense phase of APT's schedule (promotions happen here)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4,
                        help="timed steps per row per round (a multiple of APT's check_every, default 4)")
    parser.add_argument("--out", help="also write the Markdown report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)  # (B, 1, 28, 28)
    batch = (x, torch.randint(0, 10, (args.batch_size,)))
    modes = [m for m in args.modes.split(",") if m]
    started = time.perf_counter()
    rows, first_s = [], {}
    for mode in modes:
        for name, overrides in ROWS.items():
            # a 10-step "epoch": the dense phase covers the promotion steps, then checks every few steps
            row = Row(name, overrides, batch, compiled=mode == "compile", steps_per_epoch=10)
            t0 = time.perf_counter()
            for _ in range(args.promote_steps):
                row.step()
            first_s[name, mode] = time.perf_counter() - t0
            rows.append((mode, row))
            print(f"[{time.perf_counter() - started:5.0f}s] ready: {name} {mode}", file=sys.stderr, flush=True)
    every = {row.check_every() for _, row in rows} - {None}
    if any(args.steps % p for p in every):
        print(f"warning: --steps {args.steps} is not a multiple of check_every {sorted(every)}: blocks differ in "
              f"their number of check steps", file=sys.stderr)
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
        if row.check_every() is None:
            return "-"
        check, plain = single[mode, row.name, True], single[mode, row.name, False]
        return " / ".join(f"{1e3 * statistics.median(v):.1f}" if v else "-" for v in (check, plain))
    lines = [f"# Training-step time: APT vs fixed 8/8/8, ResNet-20 (1x28x28 inputs), batch {args.batch_size}, cpu", "",
             f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}",
             f"- step = train.train_step (forward, backward, optimizer steps, schedules) on a fixed random batch; "
             f"{args.rounds} interleaved rounds of {args.steps} consecutive steps per row, ms/step the median over "
             f"rounds of a round's mean, after {args.promote_steps} untimed steps; APT check steps: "
             f"{', '.join(f'every {p}' for p in sorted(every)) or '-'} after the dense phase; CPU ms = process "
             f"time (all threads) per step, less sensitive than wall time to other processes on the machine",
             f"- load average (1, 5, 15 min) before / after the timed steps: "
             f"{', '.join(f'{v:.2f}' for v in load_before)} / {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
             f"- graphs compiled during the timed steps (bit changes included): {recompiled}", "",
             "| config | mode | ms/step | ratio to fixed 8/8/8 | CPU ms/step | CPU ratio | "
             "check / plain step ms (median) | mean bits after the run | first steps incl. compile (s) |",
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
