"""The command line fails fast, in one line, on a config choice that does not exist."""
from runtime.cli import check_group_overrides, config_choices, run_id


def test_unknown_model_names_value_and_choices():
    error = check_group_overrides(["model=resnet99"])
    assert error is not None and "\n" not in error
    assert "model=resnet99" in error and "resnet20" in error


def test_multirun_lists_are_checked_item_by_item():
    assert check_group_overrides(["quant/grad=minmax,lbt", "seed=0,1"]) is None
    error = check_group_overrides(["quant/grad=minmax,lbtt"])
    assert error is not None and "lbtt" in error and "mse" in error


def test_plain_keys_and_hydra_groups_are_left_alone():
    assert check_group_overrides(["optim.epochs=1", "bits=4", "hydra/launcher=joblib", "+foo=1"]) is None


def test_every_group_lists_its_files():
    for group in ("model", "data", "quant", "quant/grad", "task", "optim", "logger", "experiment"):
        assert config_choices(group), group


def test_run_id_is_a_single_folder_name():
    assert run_id("bits=4,quant/grad=lbt,seed=0") == "bits=4,quant.grad=lbt,seed=0"
    assert run_id("") == "default"
