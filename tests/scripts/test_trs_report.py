"""scripts/trs_report.py: per optimizer, accuracy before/after training and the transition statistics early and
late, from real (tiny) runs."""
from hydra import compose, initialize_config_dir

import train
from runtime.cli import CONFIG_DIR
from scripts.trs_report import main, report

TINY = ["data=synthetic", "data.num_train=96", "data.num_test=32", "data.batch_size=32", "optim.epochs=2",
        "log_every=1", "progress=false", "logger.wandb.mode=disabled", "quant.bits.w=2", "quant.bits.a=2",
        "quant.bits.g=32", "quant.weight_grid=signed", "name=trs", "log_transitions=true"]


def test_the_report_has_a_row_per_optimizer_with_every_column(tmp_path, capsys):
    for optim in ("sgd", "sgdt"):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[*TINY, f"optim={optim}", f"results_dir={tmp_path}", f"run_id={optim}"])
        assert train.train(cfg, {"optim": optim})["status"] == "finished"
    text = report(tmp_path, "trs")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| sgd")}
    assert set(rows) == {"sgd", "sgdt"}
    # every cell filled but "before training" (no model.init_from here)
    assert all(len(cells) == 10 and not cells[1] and all(c.strip(" |") for c in cells[2:]) for cells in rows.values())
    assert main(["--name", "nothing", "--root", str(tmp_path)]) == 2
    assert "error: no runs with name='nothing'" in capsys.readouterr().err
