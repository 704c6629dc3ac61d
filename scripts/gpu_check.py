"""GPU check: every task trained a few steps on CUDA, timed and checked in one command (issue 28).

On a GPU machine, from the repository root (writes results/bench/gpu.md; exit status 1 if any check failed):

    python scripts/gpu_check.py

    python scripts/gpu_check.py --models resnet18,edsr --steps 10     # shorter
    python scripts/gpu_check.py --compile-rows bf16                   # fewer compiled rows (compiling dominates)
    python scripts/gpu_check.py --dry-run --out /tmp/gpu.md           # CPU, tiny shapes, same code paths (the test)

Models (--models): timm ResNet-18 (224x224, batch 128, 1000 classes), timm ViT-S/16 (the same), EDSR-baseline x2
(LR patches 48, batch 16) and FCOS ResNet-18 + FPN (128x128 canvases, batch 16). Rows (--rows): FP32, bf16 (amp),
W8A8G8 / W4A4G4 with LBT's and min-max's gradient intervals, quant.kernel=exact and int8, W4A4G4 without amp;
every row eager, --compile-rows also compiled. Each row is a config composed from the overrides
`python train.py` takes (its command is in the report), built by build_variant as train.py builds a run, and
stepped by train.train_step on one fixed batch of the run's data (detection: canvases of the configured spec from
generated items, as a GPU machine may lack the Fashion-MNIST files).

Processes (scripts/gpu_check_worker.py): on CUDA one worker per model. Phase 1, the workers together
(--parallel): the exactness checks on the model's own layers (check_exactness: under bf16 autocast with
quant.kernel=exact every operand of every quantized layer's ops is an integer code, the scales come after; int8
equals exact layer by layer; the int8 model's loss equals the exact model's), then every row built and warmed
(a compiled row's first step compiles: "compile or first step"), its peak memory in one step, and for compiled
rows one steady-state step under CUDA's sync debug mode (no host sync allowed but FCOS's own, in torchvision).
Phase 2, one worker at a time: the timed steps, round-robin over the rows (--rounds rounds of --steps/--rounds
steps each, the GPU synchronised at the ends of a round's steps only, as in training); ms/step: the median over
rounds; ratios to bf16 in the same process and mode. The report is written (atomically) even when interrupted.
--dry-run: CPU, one worker per core, no compiled rows, no sync checks (CUDA only): ~55 s of CPU time.

Time on one H200 (2026-12-04, results/bench/gpu.md): start-up ~10 s; phase 1 ~4 min, set by ViT-S (quantized
compiles of 74-88 s with four workers compiling at once; FCOS's quantized compile 123 s); phase 2 ~40 s for three
models. `--budget-s 365 --steps 12 --rounds 3` timed ResNet-18, ViT-S and EDSR and stopped FCOS at its 70% guard:
give the defaults (450 s) or more for FCOS's timings. Guard: --budget-s: a worker not ready after 70% of it is
stopped so the others are still timed; at the budget everything left is stopped and reported as not measured
(exit 1). Too slow? --compile-rows bf16 saves ~2.5 min; --models or --steps cut further. --parallel 1 gives
uncontended compile times. Running it where the image lacks this project's pure-Python dependencies: put copies
of hydra, omegaconf, antlr4 and timm (and a pycocotools wheel for FCOS) on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, whichever checkout an editable install points to

from runtime import atomic  # noqa: E402  (this process never imports torch: the workers do)

MARK = "@@gpu_check "  # prefix of a worker's JSON lines on stdout; anything else it prints is passed through


@dataclass(frozen=True)
class Model:
    title: str
    overrides: tuple[str, ...]  # task, model and data, as `python train.py` takes them
    dry: tuple[str, ...]  # added by --dry-run: tiny shapes and widths


MODELS = {
    "resnet18": Model("timm ResNet-18", ("model=resnet18", "data=synthetic", "data.image_size=224",
                                         "data.num_classes=1000", "data.batch_size=128", "data.num_train=128"),
                      ("data.image_size=32", "data.batch_size=4", "data.num_train=4")),
    "vit_s16": Model("timm ViT-S/16", ("model=timm", "model.name=vit_small_patch16_224", "data=synthetic",
                                       "data.image_size=224", "data.num_classes=1000", "data.batch_size=128",
                                       "data.num_train=128"),
                     ("model.name=test_vit", "data.image_size=160", "data.batch_size=4", "data.num_train=4")),
    "edsr": Model("EDSR-baseline x2", ("task=super_resolution", "model=edsr_baseline", "data=skimage_sr",
                                       "data.lr_patch_size=48", "data.batch_size=16"),
                  ("model.num_features=16", "model.num_blocks=2", "data.lr_patch_size=16", "data.batch_size=4")),
    "fcos": Model("FCOS ResNet-18 + FPN", ("task=detection", "model=fcos_resnet18", "data=fashion_detection",
                                           "data.image_size=128", "data.batch_size=16"),
                  ("data.image_size=32", "data.max_scale=1.0", "data.batch_size=4", "model.fpn_channels=32",
                   "model.head_convs=1")),
}
ROWS = {  # id: (label, overrides)
    "fp32": ("FP32", ("quant=fp32", "amp=false")),
    "bf16": ("bf16", ("quant=fp32", "amp=true")),
    "w8-lbt": ("W8A8G8 lbt", ("bits=8", "quant/grad=lbt", "amp=true")),
    "w4-lbt": ("W4A4G4 lbt", ("bits=4", "quant/grad=lbt", "amp=true")),
    "w4-minmax": ("W4A4G4 minmax", ("bits=4", "quant/grad=minmax", "amp=true")),
    "w4-lbt-exact": ("W4A4G4 lbt exact", ("bits=4", "quant/grad=lbt", "quant.kernel=exact", "amp=true")),
    "w4-lbt-int8": ("W4A4G4 lbt int8", ("bits=4", "quant/grad=lbt", "quant.kernel=int8", "amp=true")),
    "w8-lbt-int8": ("W8A8G8 lbt int8", ("bits=8", "quant/grad=lbt", "quant.kernel=int8", "amp=true")),
    "w4-lbt-fp32": ("W4A4G4 lbt, no amp", ("bits=4", "quant/grad=lbt", "amp=false")),
}
REFERENCE = "bf16"
COMPILE_ROWS = "bf16,w4-lbt,w4-lbt-int8"
PHASE1_SHARE = 0.7  # of the time left when a group of workers starts: building, compiling, checking


def base_overrides(model: str, dry_run: bool, device: str) -> list[str]:
    """A model's overrides of `python train.py` (with --dry-run, its tiny values replace the full ones)."""
    spec = MODELS[model]
    dry = spec.dry if dry_run else ()
    keys = {o.split("=", 1)[0] for o in dry}
    return [o for o in spec.overrides if o.split("=", 1)[0] not in keys] + [*dry, f"device={device}"]


# -- the parent: workers, report, exit status ------------------------------------------------------------------------

class Worker:
    """A worker process for `models` and a thread that turns its JSON lines into events (None at its end)."""

    def __init__(self, models: list[str], args):
        flags = ["--steps", str(args.steps), "--rounds", str(args.rounds), "--warmup", str(args.warmup),
                 "--rows", ",".join(args.rows), "--compile-rows", ",".join(args.compile_rows) or "none",
                 *(["--dry-run"] if args.dry_run else [])]
        self.models = models
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "gpu_check_worker.py"), "--worker",
                                      ",".join(models), *flags], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.events.put(json.loads(line[len(MARK):]))
            else:
                sys.stderr.write(line)
        self.events.put(None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def new_state() -> dict:
    return {"status": "not started", "environment": {}, "base": [], "checks": [], "variants": [], "ms": {},
            "timing_errors": {}}


def record(states: dict, event: dict) -> None:
    """Put one worker event into its model's state."""
    kind, st = event.pop("event"), states.get(event.pop("model"))
    if st is None:
        return
    if kind == "environment":
        st["environment"] = event
    elif kind == "base":
        st["base"] = event["overrides"]
    elif kind in ("check", "variant"):
        st[f"{kind}s"].append(event)
    elif kind == "timings":
        st["ms"], st["timing_errors"], st["status"] = event["ms"], event["errors"], "done"
    elif kind == "fatal":
        st["status"] = f"failed: {event['error']}"


def follow(worker: Worker, states: dict, until: str, deadline: float) -> bool:
    """Record the worker's events until `until` (True), its end or the deadline (False; the worker is stopped)."""
    while True:
        try:
            event = worker.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            why = "stopped at the time budget (--budget-s; phase 1 gets 70% of it)"
            worker.stop()
        else:
            if event is not None:
                kind = event["event"]
                record(states, event)
                if kind == until:
                    return True
                continue
            worker.proc.wait()
            why = f"worker exited with status {worker.proc.returncode} before '{until}'"
        for model in worker.models:
            if states[model]["status"] in ("running", "ready"):
                states[model]["status"] = why
        return False


def run_models(args, states: dict, started: float) -> None:
    """On CUDA one worker per model, --parallel at once: phase 1 together, then phase 2 one worker at a time.
    Dry run: one single-threaded worker per CPU core, the models dealt out (fewer imports of torch on a small
    CPU). A worker not ready when PHASE1_SHARE of the budget has passed is stopped, so that the others still get
    their timed steps."""
    deadline = started + args.budget_s
    n = min(len(args.models), args.parallel, os.cpu_count() or 1) if args.dry_run else len(args.models)
    groups = [args.models[i::n] for i in range(n)]
    for start in range(0, len(groups), args.parallel):
        workers = [Worker(models, args) for models in groups[start:start + args.parallel]]
        ready_by = time.monotonic() + PHASE1_SHARE * (deadline - time.monotonic())
        for worker in workers:
            for model in worker.models:
                states[model]["status"] = "running"
            if follow(worker, states, "ready", ready_by):
                for model in worker.models:
                    if states[model]["status"] == "running":
                        states[model]["status"] = "ready"
        for worker in workers:
            if any(states[m]["status"] == "ready" for m in worker.models):
                try:
                    worker.proc.stdin.write("go\n")
                    worker.proc.stdin.flush()
                except BrokenPipeError:  # it has just ended: follow reports how
                    pass
                follow(worker, states, "done", deadline)
        for worker in workers:
            try:
                worker.proc.wait(timeout=max(1.0, min(60.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            worker.stop()


def failures(states: dict) -> list[str]:
    """Every failed check, failed row and unfinished worker, one line each."""
    out = []
    for model, st in states.items():
        out += [f"{model}: {c['name']}: {c['detail']}" for c in st["checks"] if not c["ok"]]
        out += [f"{model}: {ROWS[v['row']][0]}, {v['mode']}: {v['error']}" for v in st["variants"] if "error" in v]
        out += [f"{model}: {key.replace('|', ', ')} (timing): {e}" for key, e in st["timing_errors"].items()]
        if st["status"] != "done":
            out.append(f"{model}: {st['status']}")
    return out


def ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value is not None and reference else "-"


def model_section(model: str, st: dict) -> list[str]:
    """One model's table: a row per config and mode, with its overrides of `python train.py`."""
    lines = [f"### {MODELS[model].title}", "", f"`python train.py {' '.join(st['base'])}` plus the row's overrides; "
             f"worker: {st['status']}.", ""]
    kinds = [f"{ROWS[v['row']][0]}: " + ", ".join(f"{n} {k}" for k, n in sorted(v["kernels"].items()))
             for v in st["variants"] if v["mode"] == "eager" and "int8" in v["row"] and v.get("kernels")]
    if kinds:
        lines += ["Layers per kernel (quant.kernel_choices): " + "; ".join(kinds) + ".", ""]
    lines += ["| config | overrides | mode | ms/step | ratio to bf16 | peak MiB | memory ratio to bf16 "
              "| compile or first step (s) | eager fallbacks |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    ref = {v["mode"]: v for v in st["variants"] if v["row"] == REFERENCE}  # bf16, eager and compiled
    for v in st["variants"]:
        key, own = f"{v['row']}|{v['mode']}", [o for o in v["overrides"] if o not in st["base"]]
        error = v.get("error") or st["timing_errors"].get(key)
        if error:
            cells = [f"FAILED: {error}", "-", "-", "-"]
        else:
            ms = st["ms"].get(key)
            reference_ms = st["ms"].get(f"{REFERENCE}|{v['mode']}")
            cells = [f"{ms:.1f}" if ms is not None else "not timed", ratio(ms, reference_ms), f"{v['peak_mib']:.0f}",
                     ratio(v["peak_mib"], ref.get(v["mode"], {}).get("peak_mib"))]
        first = f"{v['first_s']:.1f}" if "first_s" in v else "-"
        fallbacks = "-" if v.get("eager_fallbacks") is None else str(v["eager_fallbacks"])
        lines.append(f"| {ROWS[v['row']][0]} | `{' '.join(own)}` | {v['mode']} | " + " | ".join(cells)
                     + f" | {first} | {fallbacks} |")
    return lines + [""]


def header(args, states: dict, failed: list[str], seconds: float) -> list[str]:
    env = next((st["environment"] for st in states.values() if st["environment"]), {})
    device = f"{env.get('name', '?')}" + (f", {env['memory_gib']} GiB, compute capability {env['capability']}, "
                                          f"cuDNN {env['cudnn']}, TF32 convolutions {env['tf32_conv']}, "
                                          f"TF32 matmuls {env['tf32_matmul']} (PyTorch's defaults, which train.py "
                                          f"keeps)" if "capability" in env else "")
    per_round = max(1, args.steps // args.rounds)
    return [f"# GPU check{' (dry run: CPU, tiny shapes; the timings mean nothing)' if args.dry_run else ''}", "",
            f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
            f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; "
            f"total time {seconds:.0f} s",
            f"- device: {device}; torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, "
            f"Python {env.get('python', '?')}",
            f"- result: **{'FAIL' if failed else 'PASS'}**" + (f", {len(failed)} failure(s) below" if failed else ""),
            f"- timing: {'one process per CPU core' if args.dry_run else 'one process per model'}; after "
            f"{args.warmup} warm-up step(s) (a compiled row's first step compiles), {args.rounds} round(s) of "
            f"{per_round} step(s) per row and mode, round-robin over the rows; "
            f"ms/step: median over rounds of a round's mean; ratios: to {ROWS[REFERENCE][0]} in the same mode, "
            f"same process; peak MiB: what one step holds above its starting level "
            f"({'CUDA max_memory_allocated' if not args.dry_run else 'CPU live heap after the forward'})",
            "- eager fallbacks: graph breaks and backend failures while compiling and warming the row "
            "(runtime.compile.eager_fallbacks)", ""]


def checks_section(args, states: dict) -> list[str]:
    lines = ["## Checks", "", "| model | check | result | detail |", "|---|---|---|---|"]
    for model, st in states.items():
        lines += [f"| {model} | {c['name']} | {'pass' if c['ok'] else '**FAIL**'} | {c['detail']} |"
                  for c in st["checks"]]
        if args.dry_run or not args.compile_rows:
            why = "CUDA only (CPU dry run)" if args.dry_run else "no compiled rows (--compile-rows none)"
            lines.append(f"| {model} | no host sync in a compiled step | skipped | {why} |")
    return lines + [""]


def report(args, states: dict, seconds: float) -> tuple[str, list[str]]:
    failed = failures(states)
    lines = header(args, states, failed, seconds)
    if failed:
        lines += ["## Failures", "", *[f"- {f}" for f in failed], ""]
    lines += checks_section(args, states) + ["## Step time and memory", ""]
    for model, st in states.items():
        lines += model_section(model, st)
    return "\n".join(lines) + "\n", failed


def id_list(text: str, known: dict, flag: str) -> list[str]:
    ids = [] if text == "none" else [i for i in text.split(",") if i]
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SystemExit(f"{flag} {','.join(unknown)}: unknown; choose from {','.join(known)}")
    return ids


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {','.join(MODELS)}")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated from {','.join(ROWS)}")
    parser.add_argument("--compile-rows", default=None, help=f"rows also timed compiled (default {COMPILE_ROWS}; "
                        "dry run: none), or none")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row and mode (default 20; dry run 2)")
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 4; dry run 1)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing (default 3; dry run 1)")
    parser.add_argument("--parallel", type=int, default=4, help="workers in phase 1 at once (1: clean compile times)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop unfinished workers after this long")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, no compiled rows by default")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "gpu.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # scripts/gpu_check_worker.py: its models
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.steps = args.steps or (2 if dry else 20)
    args.rounds = min(args.rounds or (1 if dry else 4), args.steps)
    args.warmup = args.warmup or (1 if dry else 3)
    args.models = id_list(args.models, MODELS, "--models")
    args.rows = id_list(args.rows, ROWS, "--rows")
    args.compile_rows = id_list(args.compile_rows or ("none" if dry else COMPILE_ROWS), ROWS, "--compile-rows")
    if not set(args.compile_rows) <= set(args.rows):
        raise SystemExit(f"--compile-rows {','.join(args.compile_rows)}: each must be one of --rows")
    if min(args.steps, args.rounds, args.warmup, args.parallel) < 1:
        raise SystemExit("--steps, --rounds, --warmup and --parallel take integers >= 1")
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    states = {m: new_state() for m in args.models}
    try:
        run_models(args, states, started)
    finally:  # the report also says what an interrupted run had measured
        text, failed = report(args, states, time.monotonic() - started)
        print(text)
        atomic.write_text(Path(args.out), text)
        print(f"wrote {args.out}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
