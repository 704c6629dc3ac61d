"""runtime/sweep_summary.py: the multirun-end callback writes the sweep table, never fails on a reporting problem,
and ends a sweep in which some of ITS jobs failed with one line and exit status 1."""
import json
import pickle
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from reports.render_table import render_markdown
from reports.results_table import build_table
from reports.sweep_summary import SweepSummary


def _config(sweep_dir, mode="disabled"):
    return OmegaConf.create({"name": "fmnist_table", "logger": {"wandb": {"mode": mode, "project": "lbt-tests"}},
                             "hydra": {"sweep": {"dir": str(sweep_dir)}}})


def _job_config(run_dir):
    """What Hydra passes to on_job_start: the job's config, its output folder resolved."""
    return OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})


def _sweep(callback, sweep_dir, job_dirs, mode="disabled"):
    """Drive the callback as Hydra does: sweep start, on_job_start per job in a worker's pickled copy, sweep end."""
    callback.on_multirun_start(_config(sweep_dir, mode))
    for run_dir in job_dirs:
        pickle.loads(pickle.dumps(callback)).on_job_start(_job_config(run_dir), task_function=None)
    callback.on_multirun_end(_config(sweep_dir, mode))


def test_writes_table_into_sweep_folder_with_wandb_disabled(results_root, capsys):
    root, expected = results_root
    sweep_dir = root / "fmnist_table"
    SweepSummary().on_multirun_end(_config(sweep_dir))
    assert (sweep_dir / "table.md").read_text() == render_markdown(build_table(sweep_dir))
    assert len((sweep_dir / "table.csv").read_text().splitlines()) == 1 + len(expected)
    assert not (sweep_dir / "wandb").exists()


def test_a_sweep_with_a_failed_job_exits_1_with_one_line_after_writing_the_table(results_root, capsys):
    root, _ = results_root
    sweep_dir = root / "fmnist_table"
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())  # 10 finished + the failed lbt seed 2
    with pytest.raises(SystemExit) as exit_info:
        _sweep(SweepSummary(), sweep_dir, jobs)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == f"1/{len(jobs)} jobs failed (see {sweep_dir / 'table.md'})"
    assert (sweep_dir / "table.md").read_text() == render_markdown(build_table(sweep_dir))


def test_only_this_sweeps_jobs_are_counted(results_root, write_fake_run, capsys):
    # the folder holds an older failed run; this sweep re-ran 2 finished jobs and added 1 that failed
    root, _ = results_root
    sweep_dir = root / "fmnist_table"
    new = write_fake_run(root, "bits=4,quant.grad=mse,seed=0", quantizer="mse", bits="4/4/4", seed=0,
                         model="resnet20", status="failed", error="RuntimeError: boom")
    jobs = [sweep_dir / "quant=fp32,seed=0", sweep_dir / "quant=fp32,seed=1", new]
    with pytest.raises(SystemExit):
        _sweep(SweepSummary(), sweep_dir, jobs)
    assert capsys.readouterr().err.startswith("1/3 jobs failed (see ")
    # the next sweep re-runs only finished jobs: the old failures in the folder do not fail it
    _sweep(SweepSummary(), sweep_dir, jobs[:2])
    assert "2/2 jobs finished" in capsys.readouterr().out
    assert "Not counted (2)" in (sweep_dir / "table.md").read_text(), "the table still lists every run"


def test_a_job_that_left_no_readable_summary_counts_as_failed(results_root, capsys):
    root, _ = results_root
    sweep_dir = root / "fmnist_table"
    crashed, torn = sweep_dir / "crashed", sweep_dir / "torn"
    crashed.mkdir()
    torn.mkdir()
    (torn / "summary.json").write_text('{"status": "fini')
    with pytest.raises(SystemExit):
        _sweep(SweepSummary(), sweep_dir, [sweep_dir / "quant=fp32,seed=0", crashed, torn])
    assert capsys.readouterr().err.startswith("2/3 jobs failed")


def test_offline_wandb_run_lives_in_the_sweep_folder_and_holds_the_table(results_root):
    root, expected = results_root
    sweep_dir = root / "fmnist_table"
    SweepSummary().on_multirun_end(_config(sweep_dir, mode="offline"))
    (table_json,) = (sweep_dir / "wandb").glob("offline-run-*/files/media/table/sweep/table_*.table.json")
    logged = json.loads(table_json.read_text())
    assert "quantizer" in logged["columns"] and len(logged["data"]) == len(expected)


def test_problems_are_logged_never_raised(tmp_path, results_root, caplog):
    root, _ = results_root
    SweepSummary().on_multirun_end(_config(tmp_path / "no_such_sweep"))
    SweepSummary().on_multirun_end(_config(root / "fmnist_table", mode="not-a-mode"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("sweep summary skipped" in m for m in messages)
    assert any("W&B logging skipped" in m for m in messages)
    assert (root / "fmnist_table" / "table.md").exists(), "a W&B failure must not lose the table"


APP = """
import json, pathlib, hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path=None, config_name="config")
def main(cfg):
    run_dir = pathlib.Path(HydraConfig.get().runtime.output_dir)
    ok = cfg.x != 0
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "finished" if ok else "failed", "error": None if ok else "ValueError: x=0", "name": "app",
        "run_id": run_dir.name, "task": "classification", "metric": "test/top1", "model": "m", "data": "d",
        "quantizer": "lbt", "bits": "4/4/4", "seed": int(cfg.x), "final": {"test/top1": 1.0} if ok else {}}))

if __name__ == "__main__":
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(name="config", node={
        "x": 1, "name": "app", "hydra": {"sweep": {"dir": "${oc.env:SWEEP_DIR}", "subdir": "x=${x}"},
                                         "callbacks": {"s": {"_target_": "reports.sweep_summary.SweepSummary"}}}})
    main()
"""


@pytest.mark.parametrize("xs, code", [("1,2", 0), ("0,1,2", 1)])
def test_hydra_multirun_exit_status(tmp_path, xs, code):
    """Through Hydra itself (a 10-line app, not train.py): SystemExit from on_multirun_end reaches the shell."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    # this test's import path, so the app finds `runtime` whether or not the project is pip-installed
    env = {"SWEEP_DIR": str(tmp_path / "sweep"), "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": ":".join(sys.path)}
    result = subprocess.run([sys.executable, "app.py", "-m", f"x={xs}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == code, result.stderr[-2000:]
    if code:
        assert result.stderr.strip().splitlines()[-1] == f"1/3 jobs failed (see {tmp_path / 'sweep' / 'table.md'})"
    else:
        assert "2/2 jobs finished" in result.stdout
