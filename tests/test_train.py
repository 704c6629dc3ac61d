"""The one trainer: every config composes, a short run trains on CPU, bad input fails fast, settings are stored as run.

Killed and preempted runs resuming mid-epoch: tests/test_preemption.py."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import assemble
import train
from quant import quantize_
from quant.kernel_rule import int8_refusal
from runtime.cli import CONFIG_DIR, config_choices

ROOT = Path(__file__).resolve().parents[1]
# A tiny classification run: 64 synthetic 16x16 images, batch 32 -> 2 steps per epoch.
TINY = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
        "log_every=1", "progress=false", "logger.wandb.mode=disabled"]


def compose_cfg(tmp_path, overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={tmp_path}", "run_id=test", *overrides])


@pytest.mark.parametrize("group", ["model", "data", "quant", "quant/grad", "task", "optim", "logger", "experiment", "search"])
def test_every_config_file_composes(tmp_path, group):
    for choice in config_choices(group):
        cfg = compose_cfg(tmp_path, [f"{group}={choice}"])
        assemble.build_quant_spec(cfg)  # validated spec: every quant/grad file instantiates
        assert cfg.task._target_ and cfg.model._target_ and cfg.data._target_, (group, choice)


def test_two_step_quantized_training_logs_per_layer_gradient_error(tmp_path):
    summary = train.train(compose_cfg(tmp_path, [*TINY, "bits=4", "quant/grad=lbt"]))
    assert summary["status"] == "finished" and summary["steps"] == 2 and summary["bits"] == "4/4/4"
    assert 0.0 <= summary["final"]["test/top1"] <= 100.0
    run_dir = tmp_path / "default" / "test"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    layers = {k.split("/", 1)[1] for k in train_rows[0] if k.startswith("E_GL/")}
    assert layers and all(f"E_G/{name}" in train_rows[0] for name in layers)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    # Running the same command again finds the finished run and skips it.
    assert train.train(compose_cfg(tmp_path, [*TINY, "bits=4", "quant/grad=lbt"]))["wall_time_s"] == summary["wall_time_s"]


def test_two_step_apt_training_logs_bits_per_layer_and_the_cost(tmp_path):
    summary = train.train(compose_cfg(tmp_path, [*TINY, "quant=apt"]), {"quant": "apt"})
    assert summary["status"] == "finished" and summary["quantizer"] == "apt" and summary["bits"] == "apt8-24"
    rows = [json.loads(line) for line in (tmp_path / "default" / "test" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r][-1]
    assert {"apt/bits_w", "apt/bits_a", "apt/bits_g", "apt/diff_bit_g", "apt/cost"} <= set(logged)
    assert any(k.startswith("bits_g/") for k in logged) and 0 < logged["apt/cost"] <= 9 * 24 ** 2 / (9 * 32 ** 2)


@pytest.mark.parametrize("kernel", ["exact", "int8"])
def test_two_step_run_on_integer_codes_lists_each_layers_kernel_in_the_summary(tmp_path, kernel):
    summary = train.train(compose_cfg(tmp_path, [*TINY, "bits=8", "quant/grad=lbt", f"quant.kernel={kernel}"]))
    assert summary["status"] == "finished" and summary["steps"] == 2
    # ResNet-20: all 3x3 convs; int8 runs those 64 channels wide in and out entirely in int8, the narrower ones
    # int8 but for dL/dW
    kernels = summary["kernels"]
    assert len(kernels) == summary["quantized_layers"]
    wide = {"layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2", "layer3.2.conv1", "layer3.2.conv2"}
    if kernel == "int8" and int8_refusal():  # a CPU without VNNI: every layer exact (quant.kernel_rule)
        kernel = "exact"
    narrow = "int8-fwd-dx" if kernel == "int8" else kernel
    assert {kernels[n] for n in wide} == {kernel} and {k for n, k in kernels.items() if n not in wide} == {narrow}


@pytest.mark.parametrize("overrides, quantizer", [
    (["bits=4", "quant/grad=hindsight"], "hindsight"), (["bits=4", "quant/grad=psq"], "psq"),
    (["bits=4", "quant/grad=bhq"], "bhq"), (["bits=4", "quant/grad=unified_int8"], "unified_int8"),
    (["bits=8", "quant/grad=minmax", "quant.grad_format=fp8_e5m2", "quant.grad_rounding=stochastic"],
     "minmax+fp8_e5m2+sr")])
def test_two_step_run_with_each_field_baseline_logs_gradient_error_under_its_name(tmp_path, overrides, quantizer):
    summary = train.train(compose_cfg(tmp_path, [*TINY, *overrides]))
    assert summary["status"] == "finished" and summary["quantizer"] == quantizer
    rows = [json.loads(line) for line in (tmp_path / "default" / "test" / "metrics.jsonl").read_text().splitlines()]
    errors = [v for k, v in rows[0].items() if k.startswith("E_G/")]
    assert errors and all(0 <= e < 1 for e in errors) and any(e > 0 for e in errors)  # quantized, not passed through


def test_full_precision_baseline_has_no_gradient_statistics(tmp_path):
    summary = train.train(compose_cfg(tmp_path, [*TINY, "quant=fp32"]))
    assert summary["bits"] == "fp32" and summary["quantizer"] == "fp32"
    rows = (tmp_path / "default" / "test" / "metrics.jsonl").read_text()
    assert "E_G/" not in rows


def run_cli(*args, timeout=60, **kwargs):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.mark.parametrize("bits, stored", [("8", {"w": 8, "a": 8, "g": 8}), ("32", {"w": 32, "a": 32, "g": 32})])
def test_stored_config_holds_the_effective_bits(tmp_path, bits, stored):
    summary = train.train(compose_cfg(tmp_path, [*TINY, f"bits={bits}"]))
    assert summary["config"]["quant"]["bits"] == stored
    saved = OmegaConf.load(tmp_path / "default" / "test" / "config.yaml")
    assert OmegaConf.to_container(saved.quant.bits) == stored


@pytest.mark.parametrize("scheduled", [True, False])
def test_interval_lr_follows_the_weight_schedule_unless_switched_off(tmp_path, scheduled):
    """Official LBT code: the intervals' Adam lr is decayed x0.1 at the same milestones as the weights' SGD."""
    cfg = compose_cfg(tmp_path, [*TINY, "optim=sgd_multistep", "optim.scheduler.milestones=[1,2]",
                                 f"quant.interval_lr_schedule={str(scheduled).lower()}"])
    model = assemble.build_model(cfg.model, {"num_classes": 10, "in_channels": 3})
    quantize_(model, assemble.build_quant_spec(cfg))
    optimizers, schedulers, _ = assemble.build_optimizers(cfg, model, steps_per_epoch=2, epochs=3)
    lrs = []
    for _ in range(5):
        lrs.append(optimizers[1].param_groups[0]["lr"])
        for opt in optimizers:  # no gradients: a no-op step, in the order PyTorch expects
            opt.step()
        for scheduler in schedulers:
            scheduler.step()
    base = cfg.quant.interval_lr
    expected = [base, base, base * 0.1, base * 0.1, base * 0.01] if scheduled else [base] * 5
    assert lrs == pytest.approx(expected)


def test_finished_run_is_skipped_without_writing(tmp_path):
    """What lets a finished run be skipped in a read-only results folder: the skip touches no file but train.log."""
    args = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
            "progress=false", f"results_dir={tmp_path}"]
    assert run_cli(*args, timeout=120).returncode == 0
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "train.log"}
    again = run_cli(*args, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "train.log"} == files


def test_a_failing_single_run_leaves_its_error_in_train_log(tmp_path):
    # lr 1e38 overflows at once; one non-finite step in a row is enough to stop the run.
    result = run_cli("data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32",
                     "optim.optimizer.lr=1e38", "max_nonfinite_steps=1", "log_every=1", "progress=false",
                     f"results_dir={tmp_path}", timeout=120)
    assert result.returncode != 0
    (log_file,) = tmp_path.rglob("train.log")
    assert "non-finite gradients" in log_file.read_text()
    (summary,) = tmp_path.rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "failed"


def test_a_second_process_on_the_same_run_folder_refuses_in_one_line(tmp_path):
    args = ["data=synthetic", "data.num_train=2048", "data.batch_size=32", "optim.epochs=3", "progress=false",
            "threads=1", f"results_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    first = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        summary = None
        for _ in range(1200):  # until the first process owns the folder and trains
            found = list(tmp_path.rglob("summary.json"))
            if found and json.loads(found[0].read_text() or "{}").get("status") == "running":
                summary = found[0]
                break
            time.sleep(0.05)
        assert summary is not None and first.poll() is None
        before = summary.read_text()
        second = run_cli(*args, timeout=120)
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 2 and len(lines) == 1 and "in use" in lines[0], second.stderr
        assert summary.read_text() == before  # the refused process wrote nothing into the folder
    finally:
        first.kill()
        first.wait()



def test_compile_true_steps_the_model_that_compile_model_returns(tmp_path, monkeypatch):
    """compile=true goes through runtime.compile.compile_model (its CPU mask pass, tests/runtime/test_compile_masks.py);
    a spy stands in for Inductor here, which would take minutes on ResNet-20."""
    compiled = []
    counters = torch._dynamo.utils.counters
    counters["graph_break"]["an earlier run's break"] += 1  # not this run's: left out of its summary

    def spy(module):
        compiled.append(module)
        counters["graph_break"]["Failed to trace builtin operator"] += 2  # as dynamo counts a break
        return module
    monkeypatch.setattr(assemble, "compile_model", spy)
    summary = train.train(compose_cfg(tmp_path, [*TINY, "quant=apt", "compile=true"]), {"quant": "apt"})
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert len(compiled) == 1  # one process: the step model (evaluation runs the bare model)
    assert summary["eager_fallbacks"] == {"Failed to trace builtin operator": 2}


def test_a_compiled_run_compiles_its_training_step_and_evaluates_eagerly(tmp_path, monkeypatch, fresh_dynamo):
    """Evaluation on a compiled model was graphs of its own (eval-mode BatchNorm, no backward): a third of the
    detector's cold-cache compile time for a few percent of a run's forwards. Dynamo's eager backend stands in for
    Inductor; it sees which mode each graph was traced in."""
    traced_in = []

    def compile_eagerly(module):
        def backend(graph, example_inputs):
            traced_in.append("train" if module.training else "eval")
            return graph.forward
        return torch.compile(module, backend=backend)
    monkeypatch.setattr(assemble, "compile_model", compile_eagerly)
    summary = train.train(compose_cfg(tmp_path, [*TINY, "compile=true", "log_every=10"]))
    assert summary["status"] == "finished" and summary["compiled"] and "test/top1" in summary["final"]
    assert traced_in and set(traced_in) == {"train"}  # step 1 compiled (step 0 logs: eager); no eval graph


def test_amp_on_the_cpu_says_it_changes_nothing_and_the_summary_names_the_data_read(tmp_path, caplog):
    """issue 27: amp=true on a CPU ran fp32 without a word; the data source was nowhere in the run's record."""
    with caplog.at_level("WARNING", logger="train"):
        summary = train.train(compose_cfg(tmp_path, [*TINY, "amp=true", "device=cpu"]))
    assert any("amp=true has no effect on cpu" in r.getMessage() for r in caplog.records)
    assert summary["data_source"].startswith("synthetic")
