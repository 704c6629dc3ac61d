"""One run folder is one W&B run: a restarted process reuses its id, and W&B's step never goes back.

Offline wandb for real (in tmp_path), read back from the `.wandb` files that `wandb sync` would upload.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from runtime.run_logger import STATE_NAME, STEP_KEY, SYNC_COMMAND, LoggerSpec, RunLogger, WandbSpec


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "results" / "default" / "bits=4"


def start(run_dir, **kwargs):
    return RunLogger(run_dir, LoggerSpec(wandb=WandbSpec(mode="offline")), run_name="default/bits=4", config={"seed": 0}, **kwargs)


def wandb_records(path):
    """Records of a .wandb file: W&B's leveldb-style log (7-byte header, 32 KiB blocks) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST piece of a record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def wandb_history(run_dir):
    """[(W&B _step, trainer/step, run id)] over every offline folder of run_dir, in start order.

    The id comes from the `run-<id>.wandb` file: a folder started in the same second as the last one is
    named `offline-run-<time>-<id>-1`, so its name does not end in the id.
    """
    rows = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        (file,) = folder.glob("*.wandb")
        for record in wandb_records(file):
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                rows.append((record.history.step.num, items[STEP_KEY], file.stem.removeprefix("run-")))
    return rows


def test_run_killed_before_its_first_checkpoint_continues_the_same_wandb_run(offline_wandb):
    run_dir = offline_wandb
    first = start(run_dir)
    for step in (1, 2, 3):
        first.log({"train/loss": 1.0 / step}, step=step, epoch=0)
    first.finish(exit_code=1)  # killed before any checkpoint: nothing to resume from

    again = start(run_dir, resume_step=-1)
    assert again.wandb_id == first.wandb_id
    for step in (1, 2):
        again.log({"train/loss": 0.5}, step=step, epoch=0)
    again.finish()

    history = wandb_history(run_dir)
    assert {run_id for *_, run_id in history} == {first.wandb_id}  # two offline folders, one W&B run
    wandb_steps = [s for s, *_ in history]
    assert wandb_steps == sorted(set(wandb_steps))  # strictly increasing across the restart
    assert [t for _, t, _ in history] == [1, 2, 3, 1, 2]  # trainer/step is what was logged
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resumed_run_continues_the_same_id_with_later_wandb_steps(offline_wandb, monkeypatch):
    import wandb

    run_dir, inits, real_init = offline_wandb, [], wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw) or real_init(**kw))
    first = start(run_dir)
    for step in (10, 20, 30, 40):  # checkpoint after 20, killed after 40
        first.log({"train/loss": 1.0}, step=step, epoch=step // 20)
    first.finish(exit_code=1)

    resumed = start(run_dir, wandb_id=first.wandb_id, resume_step=20)
    for step in (30, 40, 50):
        resumed.log({"train/loss": 0.5}, step=step, epoch=step // 20)
    resumed.finish()

    assert [(kw["id"], kw["resume"]) for kw in inits] == [(first.wandb_id, "allow")] * 2
    history = wandb_history(run_dir)
    first_part, second_part = history[:4], history[4:]
    assert [s for s, *_ in first_part] == [10, 20, 30, 40]  # an uninterrupted run: W&B step == trainer step
    assert min(s for s, *_ in second_part) > 40 and [t for _, t, _ in second_part] == [30, 40, 50]
    assert json.loads((run_dir / STATE_NAME).read_text())["id"] == first.wandb_id


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "epoch": 0}\n{"step": 2, "epoch": 0}\n{"step": 3, "ep')
    logger = RunLogger(tmp_path, LoggerSpec(wandb=WandbSpec(mode="disabled")), run_name="x", config={}, resume_step=2)
    logger.finish()
    assert metrics.read_text() == '{"step": 1, "epoch": 0}\n{"step": 2, "epoch": 0}\n'
    assert not (tmp_path / STATE_NAME).exists()  # disabled: no W&B state is written


def test_readme_sync_command_finds_every_offline_run(tmp_path):
    """Per-run folders sit one level deeper than sweep-summary runs; one command must upload both (dry run here)."""
    for folder in ("demo/default/wandb/offline-run-20261124_000000-aaaaaaaa",
                   "demo/default/wandb/offline-run-20261124_000100-aaaaaaaa",  # the same run, resumed
                   "fmnist_table/bits=4,seed=0/wandb/offline-run-20261124_000000-bbbbbbbb",
                   "fmnist_table/wandb/offline-run-20261124_000200-cccccccc"):  # the sweep-summary run
        (tmp_path / "results" / folder).mkdir(parents=True)
        (tmp_path / "results" / folder / f"run-{folder[-8:]}.wandb").write_bytes(b"")
    latest = tmp_path / "results" / "demo" / "default" / "wandb" / "latest-run"
    latest.symlink_to("offline-run-20261124_000100-aaaaaaaa")  # wandb's own link: must not count twice
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}", "WANDB_SILENT": "false"}
    result = subprocess.run(["bash", "-c", SYNC_COMMAND + " --dry-run"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Would sync 4 run(s)" in result.stdout + result.stderr, result.stdout + result.stderr
