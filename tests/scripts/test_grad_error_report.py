"""scripts/grad_error_report.py: per quantizer and bits, top-1 beside E(G), E(G_L), clipped fraction and gamma averaged
over layers and logging steps, mean ± std over seeds (fake runs in train.py's format)."""
import statistics

from scripts.grad_error_report import main, report


def test_each_cell_averages_layers_and_steps_then_seeds(results_root, capsys):
    root, expected = results_root
    lines = report(str(root), "fmnist_table").splitlines()
    rows = {(c[1], c[2]): c for line in lines if line.startswith("| ") and "---" not in line
            for c in [[x.strip() for x in line.split("|")]] if c[1] != "W/A/G"}
    assert set(rows) == {("fp32", "fp32"), ("4/4/4", "lbt"), ("4/4/4", "minmax"), ("8/8/8", "lbt"), ("8/8/8", "minmax")}
    # the failed lbt seed 2 is left out: two seeds per cell
    top1 = expected[("lbt", "4/4/4")]
    assert rows["4/4/4", "lbt"][3] == f"{statistics.fmean(top1):.2f} ± {statistics.stdev(top1):.2f} (2)"
    # fake runs: E_G is 0.01 and 0.02 in the two layers at every step -> 0.015 for every run
    assert rows["4/4/4", "lbt"][4] == "0.0150 ± 0.0000 (2)"
    # E_GL = 0.2 / (i + 1) + 0.01 seed over 4 steps -> mean 0.10417 + 0.01 seed; seeds 0 and 1
    run_means = [sum(0.2 / (i + 1) for i in range(4)) / 4 + 0.01 * s for s in (0, 1)]
    assert rows["4/4/4", "lbt"][5] == (f"{statistics.fmean(run_means):.4f} ± {statistics.stdev(run_means):.4f} (2)")
    assert rows["8/8/8", "minmax"][7] == "1.0000 ± 0.0000 (2)" and rows["8/8/8", "lbt"][7] == "0.8500 ± 0.0000 (2)"
    assert rows["fp32", "fp32"][4:] == ["-", "-", "-", "-", ""]
    assert main(["--name", "nothing", "--root", str(root)]) == 2
    assert "error:" in capsys.readouterr().err
