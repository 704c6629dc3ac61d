"""runtime/sweep_summary.py: the multirun-end callback writes the sweep table and never fails the sweep."""
import json

from omegaconf import OmegaConf

from runtime.sweep_summary import SweepSummary
from runtime.results_table import build_table, render_markdown


def _config(sweep_dir, mode="disabled"):
    return OmegaConf.create({"name": "fmnist_table", "logger": {"mode": mode, "project": "lbt-tests"},
                             "hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_writes_table_into_sweep_folder_with_wandb_disabled(results_root, capsys):
    root, expected = results_root
    sweep_dir = root / "fmnist_table"
    SweepSummary().on_multirun_end(_config(sweep_dir))
    assert (sweep_dir / "table.md").read_text() == render_markdown(build_table(sweep_dir))
    assert len((sweep_dir / "table.csv").read_text().splitlines()) == 1 + len(expected)
    finished = sum(len(v) for v in expected.values())
    assert f"sweep fmnist_table: {finished} finished, 1 failed;" in capsys.readouterr().out
    assert not (sweep_dir / "wandb").exists()


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
