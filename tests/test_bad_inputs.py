"""Bad input, typed or on disk: exit code 2, ONE line on stderr naming what was wrong, and no file written or changed.

Each case runs the real command line (`python train.py ...`), because Hydra wraps errors raised inside its job:
testing the functions alone would miss that. The cases run as forks of a process that has imported train.py
(tests/cli_process.py: what `python train.py` runs, without re-importing torch each time); two cases also run as a
fresh interpreter.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.idx import write_idx
from runtime.cli import CONFIG_DIR
from tests.cli_process import run_train

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data=synthetic", "optim.epochs=1"]
RUN_ID = "data=synthetic,optim.epochs=1"  # the run folder those two overrides name


def corrupt_checkpoints(results: Path) -> None:
    run_dir = results / "default" / RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    (run_dir / "checkpoint.prev.pt").write_bytes(b"")


def other_config(results: Path) -> None:
    """The run folder holds a run of the same command with seed 5: resuming it would mix two configs."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*BASE, "seed=5", f"results_dir={results}", "run_id=stored"])
    run_dir = results / "default" / RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def torchrun_result(results: Path) -> None:
    """The folder holds a finished 2-process (torchrun) run: another global batch, not this command's result."""
    run_dir = results / "default" / RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text('{"status": "finished", "world_size": 2, "final": {"test/top1": 50.0}}')


def truncated_fashion_mnist_gz(results: Path) -> None:
    """DATA_ROOT/fashion-mnist holds the four .gz files cut short, as an interrupted download leaves them."""
    folder = results.parent / "data" / "fashion-mnist"  # DATA_ROOT is tmp_path/data, beside results
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(100, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        for stem, array in ((f"{split}-images-idx3-ubyte", pixels), (f"{split}-labels-idx1-ubyte", pixels[:, 0, 0])):
            write_idx(folder / f"{stem}.gz", array, compress=True)
            (folder / f"{stem}.gz").write_bytes((folder / f"{stem}.gz").read_bytes()[:-100])


def empty_data_folder(results: Path) -> None:
    (results.parent / "data" / "empty").mkdir()


CASES = {  # id: (overrides, a word the line must contain, set-up of files)
    "unknown model": (["model=resnet99"], "resnet99", None),
    "unknown grad policy": (["quant/grad=lbtt"], "lbtt", None),
    "unknown task": (["task=segmentation"], "segmentation", None),
    "unknown optimizer": (["optim=adagrad"], "adagrad", None),
    "unknown weight grid": (["quant.weight_grid=ternary"], "quant.weight_grid='ternary'", None),
    "compile not auto, true or false": (["compile=sometimes"], "compile=sometimes", None),
    "fused not a bool": (["quant.fused=yes"], "quant.fused=yes", None),
    "TRS experiment without its pretrained start": (["experiment=trs_cifar100_resnet20"], "model.init_from is required",
                                                    None),
    "misspelled group": (["modle=resnet20"], "modle", None),
    "misspelled key": (["optim.epoch=3"], "did you mean optim.epochs?", None),
    "misspelled nested key": (["quant.bitz.w=4"], "quant.bitz", None),
    "seed not an int": (["seed=abc"], "seed=abc", None),
    "threads not an int": (["threads=abc"], "threads=abc", None),
    "bits too small": (["bits=1"], "bits=1", None),
    "gradient bits zero": (["quant.bits.g=0"], "quant.bits.g=0", None),
    "fractional bits": (["quant.bits.w=3.5"], "quant.bits.w=3.5", None),
    "zero epochs": (["optim.epochs=0"], "optim.epochs=0", None),
    "zero log_every": (["log_every=0"], "log_every=0", None),
    "zero max_nonfinite_steps": (["max_nonfinite_steps=0"], "max_nonfinite_steps=0", None),
    "negative checkpoint interval": (["checkpoint_every_min=-1"], "checkpoint_every_min=-1", None),
    "unknown device": (["device=tpu"], "device=tpu", None),
    "unknown W&B mode": (["logger.wandb.mode=sometimes"], "sometimes", None),
    "keep_fp as a string": (["quant.keep_fp=layer1*"], "quant.keep_fp", None),
    "keep_fp keeps every layer": (["quant.keep_fp=[*]"], "no layer was quantized", None),
    "keep_first_last not a bool": (["quant.keep_first_last=maybe"], "quant.keep_first_last=maybe", None),
    "LBT alpha out of range": (["quant.grad.alpha=2"], "alpha", None),
    "MSE with one candidate": (["quant/grad=mse", "quant.grad.candidates=1"], "candidates", None),
    "zero batch size": (["data.batch_size=0"], "data.batch_size=0", None),
    "zero train subset": (["data.train_subset=0"], "train_subset", None),
    "TRS without quantized weights": (["quant=fp32", "optim=sgdt"], "optim=sgdt", None),
    "unknown kernel": (["quant.kernel=gpu"], "quant.kernel", None),
    "int8 kernel with 16-bit gradients": (["quant.kernel=int8", "quant.bits.g=16"], "quant.kernel=int8", None),
    "missing ImageNet folder": (["data=imagenet"], "imagenet", None),
    "missing DIV2K folder": (["data=div2k", "task=super_resolution", "model=edsr_tiny"], "div2k", None),
    "missing VOC folder": (["data=voc", "task=detection", "model=fcos_resnet18"], "voc", None),
    "missing COCO folder": (["data=coco", "task=detection", "model=fcos_resnet18"], "coco", None),
    "missing CIFAR-10 folder": (["data=cifar10"], "cifar", None),
    "truncated gzip IDX file": (["data=fashion_mnist"], "train-images-idx3-ubyte.gz", truncated_fashion_mnist_gz),
    # A folder typed as data.root is read or refused, never swapped for the system copy (train_subset: if it were
    # swapped, the run would end quickly).
    "explicit data.root without the files": (["data=fashion_mnist", "data.root=${data_root}/empty",
                                              "data.train_subset=64"], "data.root=", empty_data_folder),
    "NCE export over a hand-written model config": (["search=nce", "search.export_name=resnet20"], "resnet20.yaml", None),
    "NCE zero budget": (["search=nce", "search.budget=0"], "search.budget=0", None),
    "NCE on a network without residual blocks": (["search=nce", "model=mobilenet_v2", "model.name=shufflenet_v2_x0_5"],
                                                 "no free width", None),
    "NCE unknown alignment": (["search=nce", "search.alignment=soft"], "search.alignment=soft", None),
    "NCE unknown search space": (["search=nce", "search.space=stages"], "search.space=stages", None),
    "NCE zero-padding over tied stages": (["search=nce", "search.alignment=zero_pad"], "search.space=inner", None),
    "NCE temperature below zero": (["search=nce", "search.tau_min=-1"], "tau_min=-1", None),
    # issue 27: each of these was accepted, or failed late, before its fix
    "sweep over a key that does not name the folder": (["-m", "compile=false,true"], "compile=false,true", None),
    "result of a 2-process run": ([], "2 process", torchrun_result),
    "bits beside quant=fp32": (["bits=8", "quant=fp32"], "quant=fp32", None),
    "bits beside a per-role width": (["bits=4", "quant.bits.w=8"], "quant.bits.w=8", None),
    "bits beside quant=apt": (["bits=16", "quant=apt"], "quant=apt", None),
    "group given twice": (["data=fashion_mnist", "data=synthetic"], "given twice", None),
    "key given twice": (["seed=1", "seed=2"], "given twice", None),
    "keep_fp pattern that matches no layer": (["quant.keep_fp=[layer9.*]"], "layer9", None),
    "negative learning rate": (["optim.optimizer.lr=-0.1"], "optim.optimizer.lr=-0.1", None),
    "APT with the int8 kernel": (["quant=apt", "quant.kernel=int8"], "quant.kernel=int8", None),
    "FP8 gradients at 4 bits": (["bits=4", "quant.grad_format=fp8_e5m2"], "quant.bits.g=4", None),
    "unknown gradient format": (["quant.grad_format=fp6"], "quant.grad_format='fp6'", None),
    "per-sample gradients with the int8 kernel": (["quant/grad=psq", "quant.kernel=int8"], "quant.kernel=int8", None),
    "BHQ block of one row": (["quant/grad=bhq", "quant.grad.block=1"], "quant.grad.block=1", None),
    "APT adaptive epochs below zero": (["quant=apt", "quant.precision.adaptive_epochs=-1"],
                                       "quant.precision.adaptive_epochs=-1", None),
    "init_from a path that does not exist": (["model.init_from=/no/such/run"], "model.init_from", None),
    "unreadable checkpoints": ([], "checkpoint", corrupt_checkpoints),
    "run folder of another config": ([], "seed", other_config),
}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file (size, mtime) and every folder: an empty run folder left behind counts as written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder"
            for p in folder.rglob("*")}


def check_bad_input(tmp_path, overrides, word, setup, *, fresh_interpreter=False):
    results, data_root = tmp_path / "results", tmp_path / "data"
    results.mkdir()
    data_root.mkdir()
    if setup:
        setup(results)
    before = snapshot(tmp_path)
    groups = {o.split("=")[0] for o in overrides}
    base = [o for o in BASE if o.split("=")[0] not in groups]
    flags, overrides = [o for o in overrides if o.startswith("-")], [o for o in overrides if not o.startswith("-")]
    args = [*flags, *base, *overrides, f"results_dir={results}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "DATA_ROOT": str(data_root)}
    if fresh_interpreter:
        result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
    else:
        result = run_train(args, cwd=ROOT, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert word.lower() in lines[0].lower(), lines[0]
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


@pytest.mark.parametrize("overrides, word, setup", CASES.values(), ids=CASES.keys())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, overrides, word, setup):
    check_bad_input(tmp_path, overrides, word, setup)


@pytest.mark.parametrize("case", ["unknown model", "zero epochs"])
def test_a_fresh_python_train_py_exits_2_with_the_same_line(tmp_path, case):
    check_bad_input(tmp_path, *CASES[case], fresh_interpreter=True)
