"""Cost of keeping the quantizer state identical across DDP ranks: step time with vs without the reduction.

Two ranks (gloo on CPU, NCCL on GPUs) train a W4A4G4 LBT ResNet-20, each variant the run train.py assembles on
them (bench_common.build_run: assemble.read_specs, assemble.assemble with this process group, train.fit's
first-batch warm-up; each rank its shard of the in-memory synthetic data), stepped by `Run.train_step`. Variant
`sync`: gamma updates wait for one packed all-reduce of every layer's statistics (QuantLifecycle.after_backward),
as train.py runs DDP. Variant `local`: the same run with each rank updating its own gamma inside the backward (the
single-process path), so the ranks' gamma may diverge; it is the DDP step without the reduction. Both variants run
in the same processes, interleaved over rounds; the median is reported.

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
from dataclasses import replace

import torch
import torch.multiprocessing as mp

from quant import set_deferred_updates
from quant.lifecycle import QuantLifecycle
from runtime import distributed
from scripts.bench_common import build_run, emit_report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _variant(d, batch_size: int, deferred: bool):
    """The step function of one variant; same seed, so both start from the same weights."""
    run, batch = build_run(["model=resnet20", "bits=4", "quant/grad=lbt", "optim.epochs=1000"],  # 1000-step schedules
                           batch_size=batch_size, image_size=32, dist=d)
    if not deferred:  # each rank's gamma moves in its own backward; after_backward reduces nothing
        set_deferred_updates(run.model, False)
        run = replace(run, quant=QuantLifecycle(run.model))
    return lambda: run.train_step(batch)


def _worker(rank: int, world: int, port: int, args, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(args.threads)
    d = distributed.setup(args.device)
    steps = {"sync": _variant(d, args.batch_size, True), "local": _variant(d, args.batch_size, False)}
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
