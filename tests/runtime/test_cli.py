"""The command line fails fast, in one line, on a bad override, and lets every Hydra sweep syntax through."""
import pytest

from runtime.cli import MAX_RUN_ID, check_group_overrides, check_overrides, config_choices, run_id


def test_unknown_model_names_value_and_choices():
    error = check_overrides(["model=resnet99"])
    assert error is not None and "\n" not in error
    assert "model=resnet99" in error and "resnet20" in error


def test_multirun_lists_are_checked_item_by_item():
    assert check_overrides(["quant/grad=minmax,lbt", "seed=0,1"]) is None
    error = check_overrides(["quant/grad=minmax,lbtt"])
    assert error is not None and "lbtt" in error and "mse" in error


def test_plain_keys_and_hydra_groups_are_left_alone():
    assert check_overrides(["optim.epochs=1", "bits=4", "hydra/launcher=joblib", "+foo=1"]) is None
    assert check_group_overrides is check_overrides  # the name train.py calls today


@pytest.mark.parametrize("argv", [
    ["-m", "quant/grad=glob(*)"],
    ["-m", "quant/grad=glob(*,exclude=m*)", "bits=4,8"],
    ["-m", "quant/grad=choice(minmax,lbt)", "model=choice(resnet20,resnet32)"],
    ["-m", "seed=range(0,3)", "optim.optimizer.lr=interval(0.01,0.1)"],
    ["name='my run'", 'logger.wandb.tags=["a b",c]', "quant.keep_fp=[head.*,fc]"],
    ["--cfg", "job", "experiment=demo", "optim.epochs=1"],
    ["model=timm", "model.name=resnet18"],  # a key that only the chosen group config has
    ["threads=null", "quant.bits.w=null", "bits=32", "optim.optimizer.lr=1", "seed=${oc.env:SEED,0}"],
    ["~experiment", "++seed=3", "+new.key=1", "hydra.launcher.n_jobs=2"],
    ["logger=[wandb,tensorboard]"], ["logger=[]"], ["logger=all", "logger.tensorboard.flush_secs=5"],
])
def test_hydra_sweep_syntax_and_valid_values_pass(argv):
    assert check_overrides(argv) is None


@pytest.mark.parametrize("argv, expected", [
    (["-m", "model=choice(resnet20,resnet99)"], "model=resnet99 is not a config in configs/model/: choose one of"),
    (["quant/grad=glob(zz*)"], "quant/grad=glob(zz*) matches no config in configs/quant/grad/"),
    (["logger=[wandb,tensorbord]"], "logger=[wandb,tensorbord]: tensorbord is not a config in configs/logger/"),
    (["modle=resnet20"], "did you mean model?"),
    (["quant/gard=lbt"], "quant/gard is not a config group: did you mean quant/grad?"),
    (["optim.epoch=3"], "optim.epoch is not a config key: did you mean optim.epochs?"),
    (["quant.bitz.w=4"], "did you mean quant.bits.w?"),
    (["experiment=demo", "optim.epoch=3"], "did you mean optim.epochs?"),
])
def test_misspelled_groups_choices_and_keys_suggest_the_nearest(argv, expected):
    error = check_overrides(argv)
    assert error is not None and "\n" not in error and expected in error, error


@pytest.mark.parametrize("argv, expected", [
    (["seed=abc"], "seed=abc is invalid: use an integer"),
    (["-m", "seed=0,abc"], "seed=abc is invalid: use an integer"),
    (["threads=two"], "threads=two is invalid: use an integer or null"),
    (["log_every=1.5"], "log_every=1.5 is invalid: use an integer"),
    (["optim.epochs=null"], "optim.epochs=null is invalid: use an integer"),
    (["data.batch_size=big"], "data.batch_size=big is invalid: use an integer"),
    (["progress=yes"], "progress=yes is invalid: use true or false"),
    (["optim.optimizer.lr=fast"], "optim.optimizer.lr=fast is invalid: use a number"),
    (["quant.bits.g=four"], "quant.bits.g=four is invalid: use an integer or null"),
    (["seed=[1,"], "seed=[1, is not a valid override"),
])
def test_mistyped_values_are_one_line_naming_key_and_type(argv, expected):
    error = check_overrides(argv)
    assert error is not None and "\n" not in error and error.startswith(expected), error


def test_a_sweep_is_checked_with_one_composition_not_one_per_job(monkeypatch):
    # What keeps the check fast (it runs before every command): the config is composed once with the first choice
    # of each swept group, whatever the number of jobs. Counted, not timed: a wall-clock bound fails on a busy machine.
    import hydra
    compositions = []
    real_compose = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: compositions.append(k.get("overrides")) or real_compose(*a, **k))
    sweep = ["-m", "experiment=demo", "quant/grad=glob(*)", "bits=4,8", "optim.epochs=1", "seed=range(0,3)"]
    assert check_overrides(sweep) is None  # 8 gradient choices x 2 bit-widths x 3 seeds = 48 jobs
    assert len(compositions) == 1


def test_every_group_lists_its_files():
    for group in ("model", "data", "quant", "quant/grad", "task", "optim", "logger", "experiment"):
        assert config_choices(group), group


def test_run_id_is_a_single_folder_name():
    assert run_id("bits=4,quant/grad=lbt,seed=0") == "bits=4,quant.grad=lbt,seed=0"
    assert run_id("") == "default"


def test_long_override_lists_get_a_short_stable_unique_folder_name(tmp_path):
    overrides = ",".join(f"data.option_{i:03d}=value_{i:03d}" for i in range(24))
    assert len(overrides) > 600
    name = run_id(overrides)
    assert len(name) <= MAX_RUN_ID and name == run_id(overrides)
    assert name.startswith("data.option_000=value_000,data.option_001=value_001,")
    head = name.rsplit("...-", 1)[0]
    assert head.endswith(",") and head[:-1] in overrides  # whole overrides, then the hash of the full string
    assert run_id(overrides.replace("value_023", "value_999")) != name  # a change in the cut-off tail still counts
    (tmp_path / name).mkdir()  # not "File name too long"
    short = ",".join(f"k{i}=v" for i in range(20))
    assert run_id(short) == short  # names under the limit are unchanged, so existing runs still resume
