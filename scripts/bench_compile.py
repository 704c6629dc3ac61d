"""Compile time per task on this machine: each task's README command run eager and compiled, from a cold cache.

For each task, `python train.py <its README command> compile=false` and `compile=true` run as a new user runs them
(a fresh process, Inductor's cache in a new empty folder), shortened to `--steps` training steps by the data's
size settings (detection's test split too); the test split is evaluated once at the end (eagerly in both modes:
a compiled run compiles its training step only).
Reported per run: the whole command's wall time, its first training step (from metrics.jsonl's first logged
window), the steady step time (the last logged window), the seconds it spent compiling (summary.json's
`compile_s`: every graph, the training step's and the evaluation's, forward and backward; an eager run's are the
fused quantizers', quant/fused.py) and, for compiled runs, the steps after which compiling pays back (the compile
seconds over the eager run's / the steady step time saved; "never" when the compiled step is not faster).

    python scripts/bench_compile.py                                  # every task, Markdown on stdout
    python scripts/bench_compile.py --tasks detection --steps 20 --out results/bench/compile_cpu.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TASKS = {  # task: (README command's overrides, overrides giving `steps` steps of its batch size, batch size)
    "classification": (["experiment=demo"], lambda n: [f"data.train_subset={n * 128}"], 128),
    "super_resolution": (["task=super_resolution", "bits=8"], lambda n: [f"data.patches_per_epoch={n * 16}"], 16),
    "detection": (["task=detection", "bits=8"], lambda n: [f"data.num_train={n * 16}", "data.num_test=64"], 16),
}


def run(task: str, compile: bool, steps: int, log_every: int, results: Path, timeout: float) -> dict:
    """One shortened README command in a fresh process; its timings (None past `timeout` seconds)."""
    command, shorten, batch = TASKS[task]
    name = f"{task}_{'compiled' if compile else 'eager'}"
    overrides = [*command, *shorten(steps), "optim.epochs=1", f"compile={str(compile).lower()}", "logger=[]",
                 "progress=false", f"log_every={log_every}", f"name={name}", f"results_dir={results}"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "WANDB_MODE": "disabled"}
        started = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"command": shlex.join(["python", "train.py", *command, f"compile={str(compile).lower()}"]),
                    "timeout_s": timeout}
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{task} compile={compile} failed:\n{done.stderr[-3000:]}")
    (metrics,) = results.glob(f"{name}/*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    windows = [r for r in rows if "train/img_per_s" in r]
    first, last = windows[0], windows[-1]
    summary = json.loads(next(results.glob(f"{name}/*/summary.json")).read_text())
    return {"command": shlex.join(["python", "train.py", *command, f"compile={str(compile).lower()}"]),
            "wall_s": wall, "first_step_s": batch / first["train/img_per_s"],
            "step_ms": 1000 * batch / last["train/img_per_s"], "compile_s": summary["compile_s"],
            "fallbacks": summary.get("eager_fallbacks") or {}}


def report(results: dict, args, started: str, seconds: float) -> str:
    lines = [f"# Compile time per task, {platform.machine()} CPU", "",
             f"- command: `python scripts/bench_compile.py {shlex.join(sys.argv[1:])}`",
             f"- date: {started}; torch {torch.__version__}, {os.cpu_count()} cores "
             f"({platform.processor() or 'cpu'}), threads {torch.get_num_threads()}",
             f"- each README command shortened to {args.steps} training steps (1 epoch) and a short test split; "
             f"a fresh process and an empty Inductor cache per run (what a new user pays)", "",
             "| task | command | mode | wall (s) | first step (s) | step (ms) | compile (s) | pays back after |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for task, (eager, compiled) in results.items():
        if "timeout_s" in compiled:
            lines.append(f"| {task} | `{eager['command']}` | eager | {eager['wall_s']:.0f} | "
                         f"{eager['first_step_s']:.1f} | {eager['step_ms']:.0f} | {eager['compile_s']:.0f} | |")
            lines.append(f"| {task} | `{compiled['command']}` | compiled | did not finish in "
                         f"{compiled['timeout_s']:.0f} s | | | | |")
            continue
        extra_s = compiled["compile_s"] - eager["compile_s"]
        saved = eager["step_ms"] - compiled["step_ms"]
        payback = f"{1000 * extra_s / saved:.0f} steps" if saved > 0 else "never"
        for mode, r in (("eager", eager), ("compiled", compiled)):
            extra = f"{r['compile_s']:.0f} | {payback if mode == 'compiled' else ''}"
            lines.append(f"| {task} | `{r['command']}` | {mode} | {r['wall_s']:.0f} | {r['first_step_s']:.1f} | "
                         f"{r['step_ms']:.0f} | {extra} |")
        if compiled["fallbacks"]:
            lines.append(f"| | eager fallbacks: {compiled['fallbacks']} | | | | | | |")
    lines += ["", f"Total benchmark time: {seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {list(TASKS)}")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--log-every", type=int, default=10, help="steps per logged window (the steady step time)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one command may take")
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    for task in tasks:
        if task not in TASKS:
            raise SystemExit(f"--tasks: {task!r} is not one of {list(TASKS)}")
    started, t0 = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for task in tasks:
            results[task] = [run(task, compile, args.steps, args.log_every, Path(folder), args.timeout)
                             for compile in (False, True)]
            print(f"{task}: {[r.get('wall_s', 'timeout') for r in results[task]]} s", file=sys.stderr)
    text = report(results, args, started, time.perf_counter() - t0)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
