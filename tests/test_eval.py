"""eval.py: a finished run's last checkpoint reproduces its final metrics and best.pt its best ones, exactly; bad
input is one line and exit 2."""
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

import eval as eval_run
import train
from models.init_from import load_init
from models.resnet_cifar import resnet20
from runtime.cli import CONFIG_DIR

TINY = ["data=synthetic", "data.num_train=64", "data.num_test=64", "data.batch_size=32", "optim.epochs=3",
        "progress=false", "logger.wandb.mode=disabled", "bits=4", "optim.optimizer.lr=0.5"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"results_dir={tmp}", "run_id=run"])
    return tmp / "default" / "run", train.train(cfg)


def test_the_last_checkpoint_gives_the_summarys_final_metrics_exactly(finished):
    run_dir, summary = finished
    result = eval_run.evaluate_run(run_dir)
    assert result["metrics"] == summary["final"]
    assert json.loads((run_dir / "eval_last.json").read_text())["metrics"] == summary["final"]


def test_best_pt_holds_the_best_epoch_and_gives_its_metrics(finished):
    run_dir, summary = finished
    best = torch.load(run_dir / "best.pt", weights_only=False)
    assert best["epoch"] == summary["best_epoch"] and best["metrics"] == summary["best"]
    assert summary["best_checkpoint"] == "best.pt"
    assert eval_run.evaluate_run(run_dir, "best")["metrics"] == summary["best"]
    channels = best["model"]["conv1.weight"].shape[1]
    load_init(resnet20(num_classes=10, in_channels=channels), run_dir / "best.pt")  # model.init_from takes it too


@pytest.mark.parametrize("args, words", [
    (["ckpt=best"], ["no run given"]),
    (["run={run}", "ckpt=worst"], ["ckpt=worst is invalid", "last, best"]),
    (["run={run}", "data=cifar10"], ["dotted keys"]),
    (["run={run}", "model.depth=3"], ["no key model.depth"]),
    (["run={run}", "model._target_=models.resnet_cifar.resnet32"], ["does not fit", "missing", "layer1.3"]),
    (["run={run}/nothing"], ["has no checkpoint.pt"]),
])
def test_bad_input_is_one_line_and_exit_2(finished, capsys, args, words):
    run_dir, _ = finished
    with pytest.raises(SystemExit) as exit_info:
        eval_run.cli_main([a.format(run=run_dir) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words), err
