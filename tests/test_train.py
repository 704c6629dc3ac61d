"""The one trainer: every config composes, a short run trains on CPU, bad input fails fast, a killed run resumes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import train
from runtime.cli import CONFIG_DIR, config_choices

ROOT = Path(__file__).resolve().parents[1]
# A tiny classification run: 64 synthetic 16x16 images, batch 32 -> 2 steps per epoch.
TINY = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
        "log_every=1", "progress=false", "logger.mode=disabled"]


def compose_cfg(tmp_path, overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={tmp_path}", "run_id=test", *overrides])


@pytest.mark.parametrize("group", ["model", "data", "quant", "quant/grad", "task", "optim", "logger", "experiment"])
def test_every_config_file_composes(tmp_path, group):
    for choice in config_choices(group):
        cfg = compose_cfg(tmp_path, [f"{group}={choice}"])
        train.build_quant_spec(cfg)  # validated spec: every quant/grad file instantiates
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


def test_full_precision_baseline_has_no_gradient_statistics(tmp_path):
    summary = train.train(compose_cfg(tmp_path, [*TINY, "quant=fp32"]))
    assert summary["bits"] == "fp32" and summary["quantizer"] == "fp32"
    rows = (tmp_path / "default" / "test" / "metrics.jsonl").read_text()
    assert "E_G/" not in rows


def run_cli(*args, timeout=60, **kwargs):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.mark.parametrize("override, named", [("model=resnet99", "resnet99"), ("quant.bits.g=0", "quant.bits.g=0"),
                                             ("quant/grad=lbtt", "lbtt"), ("optim.epochs=0", "optim.epochs=0")])
def test_bad_override_fails_fast_in_one_line(tmp_path, override, named):
    started = time.perf_counter()
    result = run_cli(override, f"results_dir={tmp_path}")
    assert result.returncode != 0
    assert time.perf_counter() - started < 10
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert not list(tmp_path.glob("**/summary.json"))  # no results for a command that never started


def test_killed_run_resumes_to_the_same_final_accuracy(tmp_path):
    """SIGKILL mid-epoch, re-run the same command: the summary equals an uninterrupted run's (same seed, CPU)."""
    args = ["data=synthetic", "data.num_train=2048", "data.num_test=256", "data.batch_size=64", "optim.epochs=3",
            "bits=4", "quant/grad=lbt", "progress=false", "log_every=8"]
    reference = run_cli(*args, f"results_dir={tmp_path / 'straight'}", timeout=300)
    assert reference.returncode == 0, reference.stderr
    (straight_dir,) = (tmp_path / "straight" / "default").iterdir()  # one run folder, named by the overrides
    expected = json.loads((straight_dir / "summary.json").read_text())

    killed_dir = tmp_path / "killed" / "default" / straight_dir.name
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "train.py", *args, f"results_dir={tmp_path / 'killed'}"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed_dir / "summary.json").read_text())["status"] == "running"

    resumed = run_cli(*args, f"results_dir={tmp_path / 'killed'}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads((killed_dir / "summary.json").read_text())
    assert got["status"] == "finished"
    assert got["final"] == expected["final"] and got["steps"] == expected["steps"]
    steps = [json.loads(line)["step"] for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # lines the killed run logged past its checkpoint were dropped, not duplicated
