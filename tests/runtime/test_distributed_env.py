"""Under SLURM (through submitit) every task of a run is one rank: torch's env:// variables come from SLURM's."""
import os

import pytest

from runtime import distributed

SLURM_TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16", "SLURM_PROCID": "9",
              "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
              "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_STEP_NODELIST": "gpu[07-08]"}


@pytest.fixture
def slurm_task(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded first, so the variables the export adds are removed afterwards
        monkeypatch.delenv(key)
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)


def test_a_submitit_slurm_task_becomes_its_rank(slurm_task):
    distributed._export_submitit_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("9", "16", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"].isdigit()


def test_torchrun_variables_win_and_one_task_stays_single(slurm_task, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    distributed._export_submitit_env()
    assert os.environ["RANK"] == "3" and "WORLD_SIZE" not in os.environ
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    distributed._export_submitit_env()
    assert "RANK" not in os.environ
