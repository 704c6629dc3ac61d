"""Preemption-safe runs: a checkpoint inside the epoch, SIGKILL or the cluster's SIGTERM, then the same command
finishes with exactly the metrics of an uninterrupted run (same seed, CPU)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# 32 steps per epoch, 2 epochs; checkpoint_every_min=0.0002 (12 ms) checkpoints after nearly every step.
ARGS = ["data=synthetic", "data.num_train=2048", "data.num_test=256", "data.batch_size=64", "optim.epochs=2",
        "bits=4", "quant/grad=lbt", "progress=false", "log_every=4", "threads=1"]
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def cli(results, *extra):
    return [sys.executable, "train.py", *ARGS, f"results_dir={results}", *extra]


def mid_epoch_checkpoint(run_dir: Path) -> dict | None:
    try:
        ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    except (FileNotFoundError, EOFError, RuntimeError):
        return None
    return ckpt if ckpt["batch"] > 0 else None


_REFERENCES: dict[str, tuple[dict, str]] = {}


def reference(tmp_path_factory, optim: str) -> tuple[dict, str]:
    """The uninterrupted run's summary and folder name, once per optimizer."""
    if optim not in _REFERENCES:
        results = tmp_path_factory.mktemp(f"straight_{optim}")
        done = subprocess.run(cli(results, f"optim={optim}"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        (summary,) = results.glob("default/*/summary.json")
        _REFERENCES[optim] = json.loads(summary.read_text()), summary.parent.name
    return _REFERENCES[optim]


@pytest.mark.parametrize("sig, exit_code, optim", [
    (signal.SIGKILL, -signal.SIGKILL, "sgd"), (signal.SIGTERM, 128 + signal.SIGTERM, "sgd"),
    (signal.SIGUSR1, 128 + signal.SIGUSR1, "sgd"),
    (signal.SIGKILL, -signal.SIGKILL, "sgdt"),  # the transition-rate state (codes, K, U) resumes too
])
def test_interrupted_mid_epoch_resumes_to_the_same_result(tmp_path, tmp_path_factory, sig, exit_code, optim):
    expected, run_name = reference(tmp_path_factory, optim)
    run_dir = tmp_path / "default" / run_name
    proc = subprocess.Popen(cli(tmp_path, f"optim={optim}", "checkpoint_every_min=0.0002"), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while mid_epoch_checkpoint(run_dir) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == exit_code, stderr[-2000:]
    ckpt = mid_epoch_checkpoint(run_dir)
    assert ckpt is not None and ckpt["epoch"] < 2, "no mid-epoch checkpoint to resume from"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"

    resumed = subprocess.run(cli(tmp_path, f"optim={optim}"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((run_dir / "summary.json").read_text())
    assert got["status"] == "finished"
    assert got["final"] == expected["final"] and got["best"] == expected["best"] and got["steps"] == expected["steps"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)  # no step logged twice
