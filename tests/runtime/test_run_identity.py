"""A run's identity is its folder: every setting that changes results names it, and the resume check ignores exactly
the settings that do not. If the two lists drift apart, a sweep over such a key sends two jobs into one folder and the
second is refused (or skipped as finished) while the sweep reports success."""
from omegaconf import OmegaConf

from runtime.cli import CONFIG_DIR, PATH_KEYS, SAME_FOLDER_KEYS, check_overrides, run_id
from runtime.resume_guard import IGNORED


def test_keys_left_out_of_the_folder_name_are_exactly_those_that_change_no_result():
    excluded = set(OmegaConf.load(CONFIG_DIR / "config.yaml").hydra.job.config.override_dirname.exclude_keys)
    assert excluded - set(PATH_KEYS) == set(SAME_FOLDER_KEYS)
    assert "amp" not in excluded  # bf16 autocast changes numerics
    assert set(SAME_FOLDER_KEYS) <= set(IGNORED)


def test_a_sweep_over_amp_keeps_both_runs_in_the_results_table():
    """The table pools reruns by their result-changing config: amp must count there too."""
    from reports.results import result_config

    assert result_config({"amp": False, "seed": 0}) != result_config({"amp": True, "seed": 0})
    assert result_config({"compile": False, "seed": 0}) == result_config({"compile": True, "seed": 0})


def test_a_multi_process_run_has_its_own_folder():
    assert run_id("bits=4", world=1) == "bits=4"
    assert run_id("bits=4", world=2) == "bits=4,world=2"
    assert run_id("", world=4) == "world=4"
    assert run_id("") == "default"


def test_a_sweep_over_a_setting_that_changes_results_is_allowed():
    assert check_overrides(["-m", "amp=false,true"]) is None
    assert check_overrides(["-m", "bits=4,8", "seed=0,1"]) is None
    assert check_overrides(["compile=true"]) is None  # one value: no two jobs share the folder


def test_equal_bits_given_twice_ways_are_not_a_conflict():
    assert check_overrides(["bits=4", "quant.bits.w=4"]) is None
    assert check_overrides(["bits=32", "quant=fp32"]) is None
    assert check_overrides(["bits=8", "quant=fixed_point"]) is None
