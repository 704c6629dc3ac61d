"""A run folder refuses to resume with a config that would change its results, and says how to start over."""
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runtime.cli import CONFIG_DIR
from runtime.resume_guard import changed_keys, check_resume_config


def resolved(overrides=()):
    """The dict train.py stores, composed from the real configs (run_id needs Hydra's runtime, so it is given)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["run_id=test", "data_root=datasets", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def store(run_dir, config):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))


def test_same_config_resumes(tmp_path):
    config = resolved(["bits=4"])
    store(tmp_path, config)
    assert check_resume_config(tmp_path, resolved(["bits=4"])) is None  # also: the YAML round trip keeps types


def test_changed_result_keys_are_named_with_the_way_out(tmp_path):
    store(tmp_path, resolved(["bits=4"]))
    error = check_resume_config(tmp_path, resolved(["bits=8", "amp=true", "optim.epochs=5"]))
    assert error is not None and "\n" not in error
    assert "amp=true (was false)" in error and "bits=8 (was 4)" in error and "optim.epochs=5 (was 3)" in error
    assert f"delete {tmp_path} or choose another name=" in error


def test_settings_that_do_not_change_results_are_ignored(tmp_path):
    store(tmp_path, resolved())
    other = resolved(["device=cpu", "compile=true", "threads=2", "progress=false", "log_every=7", "logger.wandb.mode=online",
                      "logger.wandb.tags=[x]", "data.num_workers=4", "results_dir=/elsewhere", "data_root=/data",
                      "run_id=other", "checkpoint_every_min=10"])
    assert check_resume_config(tmp_path, other) is None


def test_changed_keys_walk_dicts_and_compare_lists_whole():
    keys = [f"k{i}" for i in range(8)]
    assert changed_keys(dict.fromkeys(keys, 1), dict.fromkeys(keys, 2)) == keys
    assert changed_keys({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c"]
    assert changed_keys({"q": [1, 2]}, {"q": [1, 3]}) == ["q"]


def test_many_differences_say_how_many_more(tmp_path):
    store(tmp_path, {f"k{i}": 1 for i in range(8)})
    error = check_resume_config(tmp_path, {f"k{i}": 2 for i in range(8)})
    assert "k4=2 (was 1)" in error and "k5" not in error and "and 3 more" in error


def test_missing_or_unreadable_stored_config_counts_as_absent(tmp_path):
    assert check_resume_config(tmp_path, {"seed": 0}) is None
    (tmp_path / "config.yaml").write_text("seed: [unclosed\n")
    assert check_resume_config(tmp_path, {"seed": 0}) is None
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert check_resume_config(tmp_path, {"seed": 0}) is None


def test_a_key_added_later_with_a_null_default_still_resumes_older_folders(tmp_path):
    """model.init_from (null) came after many run folders were written: they must resume, not be refused."""
    old = resolved()
    del old["model"]["init_from"]
    store(tmp_path, old)
    assert check_resume_config(tmp_path, resolved()) is None
    error = check_resume_config(tmp_path, resolved(["model.init_from=/some/run"]))
    assert error is not None and "model.init_from added" in error


def test_older_folders_without_the_weight_grid_or_log_transitions_resume_as_what_they_ran(tmp_path):
    """quant.weight_grid came later; the older runs used the symmetric grid (runtime.cli.ADDED_KEY_DEFAULTS), and
    log_transitions changes no result."""
    old = resolved()
    del old["quant"]["weight_grid"], old["log_transitions"]
    store(tmp_path, old)
    assert check_resume_config(tmp_path, resolved()) is None
    assert check_resume_config(tmp_path, resolved(["log_transitions=true"])) is None
    error = check_resume_config(tmp_path, resolved(["quant.weight_grid=signed"]))
    assert error is not None and "quant.weight_grid" in error
