"""model.init_from: QAT starts from trained weights (a run folder or a checkpoint file), names and shapes strict."""
import pytest
import torch
from hydra import compose, initialize_config_dir

import assemble
import train
from runtime.cli import CONFIG_DIR
from runtime.distributed import Dist

TINY = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
        "log_every=1", "progress=false", "logger.wandb.mode=disabled", "device=cpu"]


def config(tmp_path, run_id, overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={tmp_path}", f"run_id={run_id}", *TINY, *overrides])


def assembled(cfg):
    return assemble.assemble(cfg, assemble.read_specs(cfg), Dist(device=torch.device("cpu")))


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory):
    """A finished full-precision run folder and its summary."""
    tmp = tmp_path_factory.mktemp("fp")
    summary = train.train(config(tmp, "fp", ["quant=fp32", "optim.optimizer.lr=0.05"]))
    return tmp / "default" / "fp", summary


def test_a_run_folder_starts_the_new_run_at_its_accuracy(tmp_path, fp_run):
    folder, summary = fp_run
    run = assembled(config(tmp_path, "qat", ["quant=fp32", f"model.init_from={folder}"]))
    top1 = run.evaluate()["top1"]
    assert top1 == summary["final"]["test/top1"]  # same weights, same data, same evaluation


def test_weights_load_before_quantization_and_a_plain_state_dict_file_works(tmp_path, fp_run):
    folder, _ = fp_run
    saved = torch.load(folder / "checkpoint.pt", weights_only=False)["model"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, tmp_path / "weights.pth")  # DDP names
    run = assembled(config(tmp_path, "w4", ["bits=4", f"model.init_from={tmp_path / 'weights.pth'}"]))
    state = run.model.state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])  # a quantized layer now
    assert any(k.endswith("wq.scale") for k in state)


@pytest.mark.parametrize("overrides, words", [
    (["model=resnet32"], ["does not fit", "missing", "layer1.3"]),
    (["model.init_from=/no/such/run"], ["/no/such/run does not exist"]),
])
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_keys(tmp_path, fp_run, overrides, words):
    folder, _ = fp_run
    with pytest.raises(assemble.ConfigError) as err:
        assembled(config(tmp_path, "bad", ["quant=fp32", f"model.init_from={folder}", *overrides]))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_run_from_a_folder_logs_its_start_accuracy_before_training(tmp_path, fp_run):
    folder, source = fp_run
    summary = train.train(config(tmp_path, "ft", ["quant=fp32", f"model.init_from={folder}"]))
    start, before = summary["start"]["start/top1"], source["final"]["test/top1"]
    assert abs(start - before) <= 0.5, (start, before)  # the loaded network, evaluated before the first step
    rows = (tmp_path / "default" / "ft" / "metrics.jsonl").read_text().splitlines()
    assert '"start/top1"' in rows[0] and '"step": 0' in rows[0]  # logged first, at step 0


def test_a_run_from_scratch_has_no_start_evaluation(fp_run):
    assert fp_run[1]["start"] is None
