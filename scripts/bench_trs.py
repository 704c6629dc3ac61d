"""Time one training step with a plain optimizer vs its transition-rate-scheduled twin (SGD vs SGDT, AdamW vs AdamT).

The steps are the trainer's own: the config is composed by Hydra as for `train.py optim=<name>`, and the
optimizers, schedulers and step come from `train.build_optimizers` / `train.train_step`, so what is timed is what
a run pays, TRS measurement (integer codes of every quantized weight, compared with the previous step's) and U_t
update included. CIFAR ResNet-20 on a fixed random batch (32x32x3), the model compiled as `compile=true` does.
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

import train
from quant import quantize_, warmup_grad_intervals
from runtime.compile import compile_model
from scripts.bench_common import compose_config, emit_report, sync

#: a TRS optimizer config -> the base optimizer config it is compared with
BASES = {"sgdt": "sgd", "adamt": "adamw"}


class Variant:
    """One model + the trainer's optimizers and schedulers for `optim=<name>`, with a compiled step."""

    def __init__(self, name: str, bits: tuple[int, int, int], device: torch.device, batch) -> None:
        self.name = name
        w, a, g = bits
        cfg = compose_config([f"optim={name}", f"quant.bits.w={w}", f"quant.bits.a={a}", f"quant.bits.g={g}",
                              "logger.mode=disabled"])
        torch.manual_seed(0)
        self.model = train.build(cfg.model, num_classes=10, in_channels=3)
        quantize_(self.model, train.build_quant_spec(cfg))
        self.model.to(device).train()
        self.model.to(memory_format=torch.channels_last)
        self.task = train.build(cfg.task)
        self.batch = batch
        warmup_grad_intervals(self.model, lambda: self.task.loss(self.model, batch))  # as train.py, eagerly
        self.optimizers, self.schedulers, self.params = train.build_optimizers(cfg, self.model, steps_per_epoch=10**4,
                                                                               epochs=1)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.step_model = compile_model(self.model)

    def step(self) -> None:
        train.train_step(self.step_model, self.model, self.task, self.batch, self.optimizers, self.schedulers,
                         self.params)


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
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    started = time.perf_counter()
    variants, compile_s = [], {}
    for name in names:
        variant = Variant(name, bits, device, (x, y))
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
             f"{args.warmup} warm-up steps; a step is train.train_step (forward, backward, optimizer steps, "
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
