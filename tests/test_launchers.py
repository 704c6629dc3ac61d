"""Every documented launcher launches: two tiny jobs through joblib and through submitit's local executor.

The SLURM preset uses the same submitit code path as `local_submitit` (pickled job, submitit's job environment),
so these runs are how the cluster path is tested without a cluster.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
        "progress=false", "log_every=1", "threads=1", "checkpoint_every_min=null"]


def multirun(tmp_path, *args, timeout=420):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "train.py", "-m", *TINY, f"results_dir={tmp_path}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("launcher, extra", [("local_parallel", ["hydra.launcher.n_jobs=2"]),
                                             ("local_submitit", [])])
def test_launcher_runs_two_jobs_to_a_finished_table(tmp_path, launcher, extra):
    result = multirun(tmp_path, f"hydra/launcher={launcher}", *extra, "name=sweep", "bits=4,8")
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = {p.parent.name.split(",")[0]: json.loads(p.read_text())
                 for p in (tmp_path / "sweep").glob("*/summary.json")}
    assert set(summaries) == {"bits=4", "bits=8"}, summaries.keys()
    assert all(s["status"] == "finished" for s in summaries.values()), summaries
    table = (tmp_path / "sweep" / "table.md").read_text()
    assert "4/4/4" in table and "8/8/8" in table
    for s in summaries.values():  # the table's numbers are the runs' numbers
        assert f"{s['final']['test/top1']:.2f}" in table


def test_sweep_with_failed_jobs_exits_non_zero_with_one_line(tmp_path):
    result = multirun(tmp_path, "name=bad", "bits=4,0")
    assert result.returncode != 0
    assert "1/2 jobs failed" in result.stderr and "table.md" in result.stderr, result.stderr[-2000:]
