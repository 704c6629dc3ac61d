"""runtime.run_info.run_labels names runs by the config files chosen, and tables never merge different choices."""
import pytest
from hydra import compose, initialize_config_dir

from runtime.cli import CONFIG_DIR
from reports.results_table import build_table
from runtime.run_info import bits_label, run_labels


def labels_of(overrides, bits="4/4/4"):
    """The labels train.py would write for a command line, from a config composed with Hydra's runtime."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return run_labels(cfg, cfg.hydra.runtime.choices, bits=bits)


@pytest.mark.parametrize("overrides, key, expected", [
    (["data=cifar10"], "data", "cifar10"),
    (["data=cifar100"], "data", "cifar100"),
    (["task=super_resolution", "model=edsr_tiny"], "model", "edsr_tiny"),
    (["task=super_resolution", "model=edsr_baseline"], "model", "edsr_baseline"),
    (["model=resnet18"], "model", "resnet18"),
    (["model=mobilenet_v2"], "model", "mobilenet_v2"),
    (["model=timm", "model.name=resnet50"], "model", "timm:resnet50"),  # a generic config: its name says which
    (["task=detection"], "model", "fcos_resnet18"),
    (["task=detection"], "data", "fashion_detection"),
    (["task=detection"], "task", "detection"),
    (["experiment=lbt_imagenet_resnet18"], "data", "imagenet"),
    (["quant/grad=mse"], "quantizer", "mse"),
    (["optim=sgdt"], "optim", "sgdt"),
    (["experiment=lbt_cifar100_resnet20"], "optim", "sgd_multistep"),
])
def test_labels_are_the_config_choices(overrides, key, expected):
    assert labels_of(overrides)[key] == expected


def test_full_precision_is_labelled_fp32_whatever_the_gradient_policy():
    labels = labels_of(["quant=fp32", "quant/grad=mse"], bits=bits_label(None, 32, None))
    assert labels["quantizer"] == "fp32" and labels["bits"] == "fp32"


def test_apt_is_labelled_by_its_choice_and_its_candidates_not_by_the_unused_gradient_policy():
    import assemble

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["quant=apt", "quant/grad=mse"], return_hydra_config=True)
    spec = assemble.build_quant_spec(cfg)
    bits = bits_label(spec.w_bits, spec.a_bits, spec.g_bits, adaptive=spec.precision)
    labels = run_labels(cfg, cfg.hydra.runtime.choices, bits=bits)
    assert labels["quantizer"] == "apt" and labels["bits"] == "apt8-24"
    assert spec.precision.candidates == (8, 16, 24) and (spec.w_bits, spec.a_bits, spec.g_bits) == (8, 8, 8)


@pytest.mark.parametrize("first, second, key", [
    (["data=cifar10"], ["data=cifar100"], "data"),
    (["task=super_resolution", "model=edsr_tiny"], ["task=super_resolution", "model=edsr_baseline"], "model"),
])
def test_runs_of_different_configs_land_in_different_rows(tmp_path, write_fake_run, first, second, key):
    # the `_target_` strings are the same (data.cifar.build, models.edsr.EDSR): the old labels merged these
    seen = []
    for i, overrides in enumerate((first, second)):
        labels = labels_of(overrides)
        seen.append(labels[key])
        write_fake_run(tmp_path, f"run{i}", quantizer=labels["quantizer"], bits=labels["bits"], seed=0,
                       model=labels["model"], data=labels["data"], top1=70.0 + i)
    assert seen[0] != seen[1]
    table = build_table(tmp_path, reference=None)
    places = {(s.data, model) for s in table.sections for model, _ in s.rows}
    assert len(places) == 2, "two different configs were averaged into one row"
    cells = [c for s in table.sections for c in s.cells.values()]
    assert sorted(c.final.values for c in cells) == [(70.0,), (71.0,)]
