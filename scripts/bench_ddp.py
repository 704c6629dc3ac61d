"""Cost of keeping the quantizer state identical across DDP ranks: step time with vs without the reduction.

Two ranks (gloo on CPU, NCCL on GPUs) train a W4A4G4 LBT ResNet-20 with the trainer's own pieces
(train.build_optimizers, train.train_step). Variant `sync`: gamma updates wait for one packed all-reduce of every
layer's statistics (quant.apply_deferred_updates), as train.py runs DDP. Variant `local`: each rank updates its own
gamma inside the backward (the single-process path), so the ranks' gamma may diverge; it is the DDP step without
the reduction. Both variants run in the same processes, interleaved over rounds; the median is reported.

    python scripts/bench_ddp.py --out results/bench/ddp_cpu.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import socket
import statistics
import sys
import time

import torch
import torch.multiprocessing as mp

import train
from quant import quantize_, set_deferred_updates, sync_quant_state, warmup_grad_intervals
from runtime import distributed
from scripts.bench_common import compose_config, emit_report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _variant(cfg, d, batch, deferred: bool):
    """(model, step function) for one variant; same seed, so both start from the same weights."""
    torch.manual_seed(0)
    task = train.build(cfg.task)
    model = train.build(cfg.model, num_classes=10, in_channels=3)
    quantize_(model, train.build_quant_spec(cfg))
    model.to(d.device).to(memory_format=torch.channels_last)
    set_deferred_updates(model, deferred)
    optimizers, schedulers, params = train.build_optimizers(cfg, model, steps_per_epoch=1000, epochs=1)
    warmup_grad_intervals(model, lambda: task.loss(model, batch))
    sync_quant_state(model, d.all_reduce_sum)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    step_model = distributed.wrap(model, d)
    reduce = d.all_reduce_sum if deferred else None

    def step():
        train.train_step(step_model, model, task, batch, optimizers, schedulers, params, all_reduce=reduce)
    return step


def _worker(rank: int, world: int, port: int, args, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(args.threads)
    d = distributed.setup(args.device)
    cfg = compose_config(["model=resnet20", "bits=4", "quant/grad=lbt"])
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g).to(d.device, memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(d.device)
    steps = {"sync": _variant(cfg, d, (x, y), True), "local": _variant(cfg, d, (x, y), False)}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(args.steps):
                d.barrier()
                if d.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if d.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    if rank == 0:
        queue.put({name: 1e3 * statistics.median(v) for name, v in times.items()})
    distributed.teardown(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    parser.add_argument("--world", type=int, default=2, help="ranks")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args()

    started = time.perf_counter()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, args.world, port, args, queue)) for r in range(args.world)]
    for p in procs:
        p.start()
    ms = queue.get()
    for p in procs:
        p.join()
    n = args.rounds * args.steps
    report = "\n".join([
        f"# DDP step with and without the quantizer-state reduction: ResNet-20 W4A4G4 LBT, {args.world} ranks",
        "", f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, {platform.machine()}, {args.device}, {args.threads} thread(s) per rank, "
        f"batch {args.batch_size} per rank, 32x32; median of {n} steps per variant ({args.rounds} interleaved rounds)",
        "", "| variant | ms/step (rank 0) | ratio to DDP without the reduction |", "|---|---:|---:|",
        f"| DDP, gamma updated per rank (no reduction) | {ms['local']:.1f} | 1.00x |",
        f"| DDP + one packed all-reduce of the quantizer statistics | {ms['sync']:.1f} | {ms['sync'] / ms['local']:.3f}x |",
        "", f"Total benchmark time: {time.perf_counter() - started:.0f} s.", ""])
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
