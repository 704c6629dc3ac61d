"""A tiny Hydra multirun sweep end to end: jobs run, a failing job is recorded and the rest go on, the table fills."""
import json
import os
import subprocess
import sys
from pathlib import Path

from scripts.table import build_table

ROOT = Path(__file__).resolve().parents[1]


def test_multirun_sweep_builds_its_table_and_records_the_failed_job(tmp_path):
    # 2 quantizers x 3 bit settings; bits=0 is invalid, so those two jobs fail inside the sweep.
    args = ["-m", "data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
            "progress=false", "log_every=1", "name=tiny_sweep", f"results_dir={tmp_path}",
            "quant/grad=minmax,lbt", "bits=4,8,0"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # 2 of the 6 jobs failed
    assert result.stderr.strip().splitlines()[-1] == f"2/6 jobs failed (see {tmp_path / 'tiny_sweep' / 'table.md'})"
    sweep = tmp_path / "tiny_sweep"
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 6
    failed = {k for k, s in summaries.items() if s["status"] == "failed"}
    assert len(failed) == 2 and all(k.startswith("bits=0,") for k in failed)  # run folders named by overrides
    assert all("bits" in summaries[k]["error"] for k in failed)
    finished = {(s["quantizer"], s["bits"]): s for s in summaries.values() if s["status"] == "finished"}

    table = build_table(tmp_path, name="tiny_sweep", reference=None)
    (section,) = table.sections
    assert {q for _, q in section.rows} == {"minmax", "lbt"}
    assert section.columns == ("4/4/4", "8/8/8")
    for model, quantizer in section.rows:
        for bits in section.columns:
            run = finished[(quantizer, bits)]
            assert section.cells[(model, quantizer, bits)].final.values == (run["final"]["test/top1"],)
            assert section.cells[(model, quantizer, bits)].best.values == (run["best"]["test/top1"],)
    assert len(table.excluded) == 2
    assert {(s["model"], s["data"], s["task"]) for s in finished.values()} == {("resnet20", "synthetic", "classification")}
    # The sweep-summary callback wrote the same table into the sweep folder.
    assert "minmax" in (sweep / "table.md").read_text() and (sweep / "table.csv").exists()


def test_a_job_refused_by_its_folder_counts_as_failed(tmp_path):
    """The folder holds a finished run of another config: the job is refused, and the sweep must not report the old
    run's "finished" as this job's result."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runtime.cli import CONFIG_DIR

    args = ["data=synthetic", "optim.epochs=1", "name=refused"]
    run_dir = tmp_path / "refused" / "data=synthetic,optim.epochs=1"
    run_dir.mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        other = compose("config", overrides=[*args, "seed=5", "run_id=x"])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(other, resolve=True))
    (run_dir / "summary.json").write_text('{"status": "finished", "final": {"test/top1": 50.0}}')
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "train.py", "-m", *args, f"results_dir={tmp_path}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("1/1 jobs failed"), result.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"  # the old run is untouched
