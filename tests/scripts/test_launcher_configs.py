"""configs/hydra/launcher/*: our launcher presets compose on top of the plugins' configs (Hydra 1.3)."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("launcher, target, values", [
    ("local_parallel", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
     {"gpus_per_node": 1, "tasks_per_node": 1}),
])
def test_launcher_preset_composes(tmp_path, launcher, target, values):
    # a throwaway primary config, so this checks only the launcher files (the main config has its own test)
    (tmp_path / "config.yaml").write_text("name: demo\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}", f"hydra.searchpath=[file://{CONFIGS}]"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    for key, value in values.items():
        assert cfg.hydra.launcher[key] == value
