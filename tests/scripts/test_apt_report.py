"""scripts/apt_report.py: per configuration, accuracy per epoch beside APT's bits and cost, from real (tiny) runs."""
from hydra import compose, initialize_config_dir

import train
from runtime.cli import CONFIG_DIR
from scripts.apt_report import main, report

TINY = ["data=synthetic", "data.num_train=96", "data.num_test=32", "data.batch_size=32", "optim.epochs=2",
        "log_every=1", "progress=false", "logger.wandb.mode=disabled", "name=apt", "quant=apt"]


def test_the_report_has_a_row_per_configuration_with_bits_and_cost(tmp_path, capsys):
    for run_id, extra in (("apt", []), ("apt8", ["quant.precision.candidates=[8]"])):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[*TINY, *extra, f"results_dir={tmp_path}", f"run_id={run_id}"])
        assert train.train(cfg, {"quant": "apt"})["status"] == "finished"
    rows = {cells[0].strip("| "): cells for line in report(tmp_path, "apt").splitlines()
            if line.startswith("| apt") for cells in [line.split(" | ")]}
    assert set(rows) == {"apt8", "apt8-24"}
    assert rows["apt8"][4].startswith("0.0625") and rows["apt8"][5].startswith("8.0 / 8.0 / 8.0")  # pinned at 8
    assert all(len(cells) == 7 and len(cells[3].split(";")[0].split(" / ")) == 2 for cells in rows.values())
    assert main(["--name", "nothing", "--root", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
