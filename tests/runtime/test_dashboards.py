"""logger=tensorboard|csv|all: a sweep's event files hold exactly metrics.jsonl's scalars, a resumed run draws no step
twice, metrics.csv is the JSONL as a table, and the logger choice does not name the run folder."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from assemble import build_logger_spec
from reports.results import read_metrics
from runtime.cli import CONFIG_DIR
from runtime.dashboards import TensorBoardSpec
from runtime.run_logger import LoggerSpec, RunLogger

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=2",
        "log_every=1", "progress=false", "bits=4"]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run folder's event files as TensorBoard reads it (purged steps hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def jsonl_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl's values per key, as (step, value); a torn last line is dropped (reports.results.read_metrics)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in read_metrics(run_dir):
        for key, value in row.items():
            if key not in ("step", "epoch"):
                out.setdefault(key, []).append((row["step"], value))
    return out


def assert_same_scalars(got, want):
    assert got.keys() == want.keys()
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32 events


def test_a_tensorboard_sweep_writes_one_event_stream_per_run_equal_to_its_jsonl(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "train.py", "-m", *TINY, "logger=[tensorboard,csv]", "quant/grad=minmax,lbt",
                             f"results_dir={tmp_path}", "name=tb"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p.parent for p in (tmp_path / "tb").glob("*/summary.json"))
    assert [r.name.rsplit(",", 1)[-1] for r in runs] == ["quant.grad=lbt", "quant.grad=minmax"]
    for run_dir in runs:
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
        got, want = scalars(run_dir), jsonl_scalars(run_dir)
        assert_same_scalars(got, want)
        assert {"E_G/layer1.0.conv1", "E_GL/layer3.2.conv2", "train/loss", "test/top1"} <= got.keys()  # per layer
        final = json.loads((run_dir / "summary.json").read_text())["final"]["test/top1"]
        assert got["test/top1"][-1][1] == pytest.approx(final, rel=1e-6)
        with (run_dir / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == len(lines)
        assert all(float(row[k]) == pytest.approx(v) for row, line in zip(rows, lines) for k, v in line.items())


def test_a_resumed_run_draws_no_step_twice(tmp_path):
    spec = LoggerSpec(tensorboard=TensorBoardSpec(flush_secs=1))
    first = RunLogger(tmp_path, spec, run_name="x", config={})
    for step in range(6):  # killed after step 5; its checkpoint was at step 3
        first.log({"train/loss": float(step)}, step=step, epoch=0)
    first.finish()
    resumed = RunLogger(tmp_path, spec, run_name="x", config={}, resume_step=3)
    for step in range(4, 8):
        resumed.log({"train/loss": 10.0 + step}, step=step, epoch=0)
    resumed.finish()
    want = [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0), (7, 17.0)]
    assert scalars(tmp_path)["train/loss"] == want
    assert jsonl_scalars(tmp_path)["train/loss"] == want


def compose_logger(overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("choice, wandb, tensorboard, csv_on", [
    ("wandb", True, False, False), ("tensorboard", False, True, False), ("csv", False, False, True),
    ("[wandb,tensorboard]", True, True, False), ("all", True, True, True), ("[]", False, False, False)])
def test_the_logger_choice_selects_the_dashboards_and_does_not_name_the_run_folder(choice, wandb, tensorboard, csv_on):
    cfg = compose_logger([f"logger={choice}", "seed=3"])
    spec = build_logger_spec(cfg, {"bits": "W4A4G4", "quantizer": "lbt", "model": "m", "data": "d"})
    assert (spec.wandb is not None, spec.tensorboard is not None, spec.csv) == (wandb, tensorboard, csv_on)
    assert cfg.hydra.job.override_dirname == "seed=3"


def test_a_bad_flush_interval_is_one_line():
    with pytest.raises(ValueError, match=r"logger.tensorboard.flush_secs=0 is invalid"):
        TensorBoardSpec(flush_secs=0)
