"""The device side of scripts/gpu_check.py: one process builds, checks and times the rows of its models.

Started by scripts/gpu_check.py (`--worker MODEL[,MODEL...]` and the command's own flags); it talks to that
process in JSON lines on stdout (MARK). Phase 1, for each model: one batch of the run's data, check_exactness,
then every row built, warmed and measured (prepare); then "ready". Phase 2, when the parent writes a line to
stdin (one worker at a time, so that nothing else runs on the device): the timed rounds (time_rounds).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, whichever checkout an editable install points to

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from assemble import Run, assemble, build, build_quant_spec, read_specs  # noqa: E402
from data.bundle import DataBundle  # noqa: E402
from quant import kernel_choices  # noqa: E402
from quant.kernel_rule import int8_refusal  # noqa: E402
from quant.exactness import (LayerOperandRecorder, assert_int8_equals_exact, assert_integer_operands,  # noqa: E402
                             layer_results)
from runtime import cli  # noqa: E402
from runtime.distributed import Dist  # noqa: E402
from runtime.compile import eager_fallbacks  # noqa: E402
from scripts.bench_common import compose_config, sync  # noqa: E402
from scripts.bench_step import MemoryProbe  # noqa: E402
from scripts.gpu_check import MARK, ROWS, base_overrides, parse_args  # noqa: E402

# check_exactness: 4 bits keep every float32 sum of codes below 2^24 here, so exact is exact too (at 8 bits the
# exact kernel's float32 sums may round: equal to int8 only up to accumulation order, docs/methods.md §1.9)
EXACTNESS_BITS = 4
# Host syncs a model's own library makes in its training step: FCOS's loss counts foreground points with .item()
# and its transform and anchors build small tensors from host values, its GIoU loss checks boxes (torchvision
# 0.26-0.29; seen on an H200: results/bench/gpu.md). Matched against the frames that synced. Any other sync fails.
ALLOWED_SYNCS = ("torchvision/models/detection/", "torchvision/ops/")
current_model = {"name": None}  # the model the worker is on: every event names it


def emit(event: str, **data) -> None:
    """One JSON line to the parent process."""
    print(MARK + json.dumps({"event": event, "model": current_model["name"], **data}, default=str), flush=True)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


# -- building: one run's objects, as train.py builds them ------------------------------------------------------

def compose(overrides: list[str]):
    """The config `python train.py <overrides>` runs, after the trainer's own command-line checks."""
    error = cli.check_overrides(overrides)
    if error:
        raise ValueError(f"bad override: {error}")
    return compose_config(overrides)


def detection_canvases(data):
    """A detection batch as data.detection_synthetic draws it (canvas size, objects, scales from `data`), from
    generated 28x28 items instead of Fashion-MNIST's; and the model kwargs its bundle would give."""
    import numpy as np

    from data import detection_synthetic
    from data.detection_transforms import collate_detection

    rng = np.random.default_rng(data.seed)
    items = rng.integers(1, 256, (32, 28, 28), dtype=np.uint8)
    canvas = detection_synthetic.CanvasSpec(size=data.image_size, min_objects=data.min_objects,
                                            max_objects=data.max_objects, min_scale=data.min_scale,
                                            max_scale=data.max_scale, max_iou=data.max_iou)
    dataset = detection_synthetic.FashionDetection(items, rng.integers(0, 10, 32), num_images=data.batch_size,
                                                   canvas=canvas, seed=data.seed, split="train")
    batch = collate_detection([dataset[i] for i in range(len(dataset))])
    kwargs = {"num_classes": detection_synthetic.NUM_CLASSES + 1, "in_channels": 3, "image_size": data.image_size}
    return batch, kwargs


def first_batch(cfg, device: torch.device):
    """(the first training batch on `device`, the model's data kwargs) from the data bundle the run builds."""
    if cfg.data._target_ == "data.detection_synthetic.build":
        batch, kwargs = detection_canvases(cfg.data)
    else:
        bundle = build(cfg.data)
        bundle.train.set_epoch(0)
        batch, kwargs = next(iter(bundle.train)), bundle.model_kwargs
    return build(cfg.task).to_device(batch, device), kwargs


class OneBatch:
    """A DataBundle loader over one fixed batch: the run steps on the batch the check measured."""

    def __init__(self, batch) -> None:
        self.batch = batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        pass

    def set_shard(self, rank: int, world: int) -> None:
        pass

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


@dataclass
class Variant:
    """One config's assembled run and its batch; `step()` is the step a training run takes (Run.train_step)."""

    run: Run
    batch: object

    def __getattr__(self, name: str):  # model, step_model, task, optimizers, autocast, ...: the run's
        return getattr(self.run, name)

    def step(self):
        return self.run.train_step(self.batch)


def build_variant(cfg, batch, model_kwargs: dict, device: torch.device) -> Variant:
    """`cfg`'s run, built by the trainer's assembly (assemble.py) on `batch` (already on `device`), warmed up on it
    as train.fit warms a fresh run. With amp on CPU (--dry-run only) autocast is on too, where train.py runs fp32,
    so that the dry run takes the bf16 code paths."""
    bundle = DataBundle(name="gpu_check", train=OneBatch(batch), test=OneBatch(batch), model_kwargs=model_kwargs,
                        source="one batch made by scripts/gpu_check_worker.py")
    run = assemble(cfg, read_specs(cfg), Dist(device=device), bundle=bundle)
    if cfg.amp and device.type != "cuda":
        run = replace(run, autocast=torch.autocast(device.type, dtype=torch.bfloat16))
    run.quant.warm_up(lambda: run.task.loss(run.model, batch))  # first-batch init of the intervals, gamma warm-up
    for opt in run.optimizers:
        opt.zero_grad(set_to_none=True)
    return Variant(run, batch)


# -- phase 1: build, warm, memory, host syncs --------------------------------------------------------------------

def peak_memory(variant: Variant, device: torch.device) -> float:
    """MiB one step holds above its starting level (scripts/bench_step.MemoryProbe: the CUDA peak)."""
    probe = MemoryProbe(device)
    probe.start()
    hook = variant.step_model.register_forward_hook(lambda *_: probe.after_forward())  # CPU: live heap there
    try:
        variant.step()
    finally:
        hook.remove()
    return probe.stop()


def _package_path(frame: traceback.FrameSummary) -> str:
    """A frame as `package/module.py:line function` (the path below site-packages), or its file name."""
    path = frame.filename.replace("\\", "/")
    for root in ("site-packages/", "dist-packages/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    else:
        path = Path(path).name
    return f"{path}:{frame.lineno} {frame.name}"


def _sync_site(stack: list[traceback.FrameSummary]) -> str:
    """`file:line (via the two innermost frames)`: the innermost frame of this repository's code (where the sync
    was asked for) and the library frames that synced (what ALLOWED_SYNCS is matched against)."""
    frames = [f for f in stack if f.filename != warnings.__file__ and f.name != "record"]
    ours = [f for f in frames if f.filename.startswith(str(ROOT) + os.sep) and "-packages" not in f.filename]
    site = ours[-1] if ours else frames[-1]
    via = " < ".join(_package_path(f) for f in reversed(frames[-2:]))
    return f"{site.filename}:{site.lineno} (via {via})"


def host_syncs(step) -> Counter:
    """{file:line: count} of every host sync in one call of `step` (CUDA sync debug mode "warn": every sync is
    seen with the Python frame that asked for it, where "error" would stop at the first). The mode switch's own
    sync (torch 2.11 on an H200: once per process, inside set_sync_debug_mode) is not the step's and not counted."""
    sites: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        stack = traceback.extract_stack()
        if "synchronizing" in str(message) and not any(f.name == "set_sync_debug_mode" for f in stack[-4:]):
            sites[_sync_site(stack)] += 1

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sites


def prepare(row: str, mode: str, overrides: list[str], batch, model_kwargs, device, warmup: int):
    """Build and warm one row in one mode; (variant or None, the report's facts about it)."""
    facts = {"row": row, "mode": mode, "overrides": overrides}
    try:
        cfg = compose(overrides)
        variant = build_variant(cfg, batch, model_kwargs, device)
        if not build_quant_spec(cfg).is_full_precision:
            facts["kernels"] = dict(Counter(kernel_choices(variant.model).values()))
        fallbacks = eager_fallbacks()
        t0 = time.perf_counter()
        variant.step()  # compiled: compiles the forward and the backward
        sync(device)
        facts["first_s"] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            variant.step()
        sync(device)
        facts["eager_fallbacks"] = sum((eager_fallbacks() - fallbacks).values()) if mode == "compile" else None
        facts["peak_mib"] = peak_memory(variant, device)
        if mode == "compile" and device.type == "cuda":
            facts["syncs"] = dict(host_syncs(variant.step))
        return variant, facts
    except Exception as e:  # noqa: BLE001 - reported as a failed row; the other rows still run
        traceback.print_exc()
        return None, {**facts, "error": short_error(e)}


def sync_check(facts: dict) -> tuple[bool, str]:
    """(passed, detail) of a compiled row's host syncs: none except ALLOWED_SYNCS."""
    syncs = facts["syncs"]
    bad = {site: n for site, n in syncs.items() if not any(a in site.split(" (via ")[-1] for a in ALLOWED_SYNCS)}
    allowed = sum(syncs.values()) - sum(bad.values())
    detail = (f"{sum(bad.values())} sync(s): " + ", ".join(f"{site} x{n}" for site, n in bad.items())) if bad else \
        "no sync" + (f" outside torchvision's detection code ({allowed} there: FCOS's loss)" if allowed else "")
    return not bad, detail


# -- phase 1: exactness of the integer kernels on the model's own layers -------------------------------------------

def check_operands(recorder: LayerOperandRecorder) -> str:
    """Every quantized layer ran its op on integer codes (times the scales after it) in forward and backward."""
    assert_integer_operands(recorder.operands, bound=2**EXACTNESS_BITS - 1)
    seen = Counter(recorder.where)
    missing = [f"{name} {phase}" for name in recorder.layers for phase in ("forward", "backward")
               if not seen[name, phase]]
    assert not missing, f"no op recorded in {', '.join(missing[:4])}"
    return (f"{len(recorder.layers)} layers, {len(recorder.operands)} ops, every operand float32 and an integer "
            f"of magnitude <= {2**EXACTNESS_BITS - 1}")


def check_int8_layers(recorder: LayerOperandRecorder, autocast) -> str:
    """Each call of a layer int8 applies to, replayed from its recorded input and output gradient with the int8
    and the exact kernel from the same state: assert_int8_equals_exact."""
    compared = 0
    for call in recorder.calls:
        layer = recorder.layers[call["name"]]
        int8 = copy.deepcopy(layer)
        int8.set_kernel("int8")
        if int8.kernel != "int8" or call["g"] is None:
            continue
        try:
            assert_int8_equals_exact(layer_results(int8, call["x"], call["g"], autocast=autocast),
                                     layer_results(copy.deepcopy(layer), call["x"], call["g"], autocast=autocast))
        except Exception as e:
            raise AssertionError(f"{call['name']} (input {tuple(call['x'].shape)}): {short_error(e)}") from e
        compared += 1
    if not compared and int8_refusal():  # a CPU dry run on a host without VNNI (quant.kernel_rule)
        return f"not compared: {int8_refusal()}"
    assert compared, "no layer runs int8"
    return f"{compared} layer calls: output, dL/dX, dL/dW, dL/db equal; interval gradients to float32 rounding"


def run_check(name: str, check, *args) -> None:
    try:
        emit("check", name=name, ok=True, detail=check(*args))
    except Exception as e:  # noqa: BLE001 - a failed check is reported, then the others run
        traceback.print_exc()
        emit("check", name=name, ok=False, detail=short_error(e))


def check_exactness(base: list[str], batch, model_kwargs, device) -> None:
    """quant.kernel=exact under bf16 autocast, one eager training step of this model: the operands of every
    quantized layer (check_operands), int8 = exact layer by layer (check_int8_layers), and the loss of the
    kernel=int8 model equal to the kernel=exact model's (same seed, before any step; rel 1e-6, as in
    tests/quant/test_integer.py)."""
    overrides = [*base, f"bits={EXACTNESS_BITS}", "quant/grad=lbt", "amp=true", "compile=false"]
    try:
        exact = build_variant(compose([*overrides, "quant.kernel=exact"]), batch, model_kwargs, device)
        int8 = build_variant(compose([*overrides, "quant.kernel=int8"]), batch, model_kwargs, device)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        emit("check", name="exactness: build", ok=False, detail=short_error(e))
        return

    def same_loss() -> str:
        losses = []
        for v in (exact, int8):
            with torch.no_grad(), v.autocast:
                losses.append(float(v.task.loss(v.model, batch)))
        a, b = losses
        assert abs(a - b) <= 1e-6 * abs(a), f"loss {b!r} (int8) != {a!r} (exact)"
        return f"loss {a:.6g} both"

    run_check("loss of the int8 model = exact model's", same_loss)
    try:
        with LayerOperandRecorder(exact.model) as recorder:
            exact.step()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        emit("check", name="exactness: a recorded step of the exact model", ok=False, detail=short_error(e))
        return
    run_check(f"integer operands (W{EXACTNESS_BITS} exact, bf16 autocast, one step)", check_operands, recorder)
    run_check("int8 = exact, layer by layer", check_int8_layers, recorder, exact.autocast)


# -- phase 2 and the worker ------------------------------------------------------------------------------------------

def time_rounds(variants: dict, rounds: int, steps: int, device) -> tuple[dict, dict]:
    """({key: median ms/step}, {key: error}): round-robin over the variants, each round `steps // rounds` steps of
    each, timed as a block (the GPU synchronised before and after it only, as a training loop runs ahead)."""
    per_round = max(1, steps // rounds)
    samples = {key: [] for key in variants}
    errors = {}
    for _ in range(rounds):
        for key, variant in variants.items():
            if key in errors:
                continue
            try:
                sync(device)
                t0 = time.perf_counter()
                for _ in range(per_round):
                    variant.step()
                sync(device)
                samples[key].append(1e3 * (time.perf_counter() - t0) / per_round)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                errors[key] = short_error(e)
    return {k: statistics.median(v) for k, v in samples.items() if v and k not in errors}, errors


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                    tf32_conv=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        info.update(name=f"CPU ({platform.machine()}, {os.cpu_count()} cores)")
    return info


def phase1(model: str, args, device: torch.device) -> dict:
    """A model's batch, exactness checks and rows; {(row, mode): Variant} of the rows that built and warmed."""
    log(f"{model}: batch and exactness checks")
    base = base_overrides(model, args.dry_run, device.type)
    emit("base", overrides=base)
    batch, model_kwargs = first_batch(compose(base), device)
    check_exactness(base, batch, model_kwargs, device)
    variants = {}
    for row in args.rows:
        for mode in ("eager", "compile") if row in args.compile_rows else ("eager",):
            log(f"{model}: {ROWS[row][0]}, {mode}")
            overrides = [*base, *ROWS[row][1], f"compile={str(mode == 'compile').lower()}"]
            variant, facts = prepare(row, mode, overrides, batch, model_kwargs, device, args.warmup)
            if variant is not None:
                variants[row, mode] = variant
            emit("variant", **facts)
            if facts.get("syncs") is not None:
                ok, detail = sync_check(facts)
                emit("check", name=f"no host sync in a compiled step ({ROWS[row][0]})", ok=ok, detail=detail)
    return variants


def main() -> None:
    """Phase 1 for each model of --worker, "ready", then phase 2 when the parent writes a line to stdin."""
    args = parse_args()
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:  # tiny shapes: a second thread only spins, and costs much more on a shared machine
        torch.set_num_threads(1)
    models = args.worker.split(",")
    current_model["name"] = models[0]
    try:
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible: run on a GPU machine, or use --dry-run")
        emit("environment", **environment(device))
    except Exception as e:  # noqa: BLE001
        emit("fatal", error=short_error(e))
        raise
    variants = {}
    for model in models:
        current_model["name"] = model
        try:
            variants[model] = phase1(model, args, device)
        except Exception as e:  # noqa: BLE001 - e.g. the data did not build: this model fails, the others run
            traceback.print_exc()
            emit("fatal", error=short_error(e))
    if device.type != "cuda":
        print("note: host-sync checks skipped (CUDA sync debug mode; this is a CPU dry run)", file=sys.stderr)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # cached blocks back to the device: the worker timing next may need them
    current_model["name"] = None
    emit("ready")
    if not sys.stdin.readline():  # a line: the parent's signal that this worker has the device to itself;
        return  # end of input: the parent is gone, nobody would read the timings
    for model, own in variants.items():
        current_model["name"] = model
        log(f"{model}: timing {len(own)} variants")
        medians, errors = time_rounds(own, args.rounds, args.steps, device)
        emit("timings", ms={f"{r}|{m}": v for (r, m), v in medians.items()},
             errors={f"{r}|{m}": v for (r, m), v in errors.items()})
        own.clear()  # frees the device memory before the next model's rows run
    current_model["name"] = None
    emit("done")


if __name__ == "__main__":
    main()
