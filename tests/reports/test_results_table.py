"""reports.results_table and its CLI scripts/table.py: one row per (model, quantizer), one column per bit setting,
mean ± sample std over seeds of the final and of the best metric."""
import csv
import io
import json
import os
import statistics
from pathlib import Path

import pytest
import yaml

from reports.results import NON_RESULT_KEYS, bits_sort_key, quantizer_label, read_summary
from reports.render_table import format_cell, render_markdown, table_rows
from reports.results_table import REFERENCE_CSV, build_table
from reports.sweep_summary import count_statuses
from scripts.table import main


def test_rows_are_model_quantizer_and_columns_are_bits_in_numeric_order(results_root):
    root, _ = results_root
    table = build_table(root)
    (section,) = table.sections
    assert section.rows == (("resnet20", "fp32"), ("resnet20", "minmax"), ("resnet20", "lbt"))
    assert section.columns == ("fp32", "4/4/4", "8/8/8")
    assert section.metric == "test/top1"


def test_cells_are_mean_and_sample_std_over_seeds(results_root):
    root, expected = results_root
    (section,) = build_table(root).sections
    assert len(section.cells) == len(expected)
    for (quantizer, bits), values in expected.items():
        final = section.cells[("resnet20", quantizer, bits)].final
        assert final.n == len(values)
        assert final.mean == pytest.approx(statistics.fmean(values))
        assert final.std == pytest.approx(statistics.stdev(values))
        assert format_cell(final) == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (2)"


def test_failed_run_is_listed_with_its_error_and_not_counted(results_root):
    root, expected = results_root
    table = build_table(root)
    (failed,) = table.excluded
    assert failed.status == "failed" and failed.seed == 2
    assert table.sections[0].cells[("resnet20", "lbt", "4/4/4")].final.n == len(expected[("lbt", "4/4/4")])
    md = render_markdown(table)
    assert "Not counted (1)" in md and "RuntimeError: loss is nan at step 12" in md


def test_unreadable_summary_is_excluded_not_fatal(results_root):
    root, _ = results_root
    broken = root / "fmnist_table" / "torn"
    broken.mkdir()
    (broken / "summary.json").write_text('{"status": "fini')
    table = build_table(root)
    assert [r.status for r in table.excluded].count("unreadable") == 1
    assert sum(c.final.n for c in table.sections[0].cells.values()) == 10


def test_cli_writes_markdown_and_csv(results_root, best_values, tmp_path, capsys):
    root, expected = results_root
    out = tmp_path / "report" / "table"
    assert main(["--root", str(root), "--name", "fmnist_table", "--out", str(out)]) == 0
    md = (tmp_path / "report" / "table.md").read_text()
    assert md == render_markdown(build_table(root, "fmnist_table"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report" / "table.csv").read_text())))
    assert len(rows) == len(expected)
    for row in rows:
        values = expected[(row["quantizer"], row["bits"])]
        assert float(row["final_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["best_mean"]) == pytest.approx(statistics.fmean(best_values(values)))
        assert int(row["n"]) == len(values)
    assert not list((tmp_path / "report").glob("*.tmp")), "atomic write left a temp file"
    assert "wrote" in capsys.readouterr().out
    assert main(["--root", str(root), "--name", "fmnist_table", "--out", str(out), "--command", "bash x.sh"]) == 0
    assert (tmp_path / "report" / "table.md").read_text() == "Made by: `bash x.sh`\n\n" + md  # the command heads it


@pytest.mark.parametrize("args", [["--root", "{tmp}/missing"], ["--root", "{root}", "--name", "nope"],
                                  ["--root", "{root}", "--task", "detection"]])
def test_bad_arguments_give_one_line_error(results_root, tmp_path, capsys, args):
    root, _ = results_root
    argv = [a.format(tmp=tmp_path, root=root) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_bits_sort_numerically_with_full_precision_first():
    bits = ["8/8/8", "16/16/16", "4/4/4", "fp32", "5/5/5", "8/8/32"]
    assert sorted(bits, key=bits_sort_key) == ["fp32", "4/4/4", "5/5/5", "8/8/8", "8/8/32", "16/16/16"]


def test_fixed_ratio_runs_are_labelled_by_their_gamma():
    summary = {"quantizer": "fixed", "config": {"quant": {"grad": {"_target_": "x", "gamma": 0.8}}}}
    assert quantizer_label(summary) == "fixed gamma=0.8"
    assert quantizer_label({"quantizer": "lbt", "config": {"quant": {"grad": {"gamma": 0.8}}}}) == "lbt"


def _paper_csv_value(model, method, column):
    lines = [ln for ln in REFERENCE_CSV.read_text().splitlines() if ln and not ln.startswith("#")]
    for row in csv.DictReader(lines):
        if row["model"] == model and row["method"] == method:
            return float(row[column])
    raise KeyError((model, method))


def test_paper_numbers_appear_beside_imagenet_runs_of_the_models_the_paper_reports(tmp_path, make_fake_runs):
    make_fake_runs(tmp_path / "a", model="resnet18", data="imagenet")
    (section,) = build_table(tmp_path / "a").sections
    assert section.paper[("resnet18", "lbt", "8/8/8")] == _paper_csv_value("resnet18", "LBT", "w8a8g8")
    assert section.paper[("resnet18", "minmax", "4/4/4")] == _paper_csv_value(
        "resnet18", "minmax (gamma=1.0)", "w4a4g4")
    assert section.paper[("resnet18", "fp32", "fp32")] == _paper_csv_value("resnet18", "LBT", "fp_top1")
    assert "**paper** (Kim et al." in render_markdown(build_table(tmp_path / "a"))
    make_fake_runs(tmp_path / "b", model="resnet20", data="imagenet")
    assert build_table(tmp_path / "b").sections[0].paper == {}
    assert "(Kim et al." not in render_markdown(build_table(tmp_path / "b"))


def test_trs_paper_numbers_appear_beside_imagenet_runs_with_full_precision_gradients_per_optimizer(
        tmp_path, write_fake_run):
    trs_csv = REFERENCE_CSV.with_name("trs_imagenet.csv")
    lines = [ln for ln in trs_csv.read_text().splitlines() if ln and not ln.startswith("#")]
    paper = {(r["model"], r["bits_wa"]): r for r in csv.DictReader(lines)}
    for optim in ("sgd", "sgdt", "adamw", "adamt"):
        for seed in (0, 1):
            write_fake_run(tmp_path, f"optim={optim},seed={seed}", quantizer="minmax", bits="2/2/32", seed=seed,
                           model="resnet18", data="imagenet", top1=60.0 + seed, optim=optim)
    write_fake_run(tmp_path, "adamw-lbt", quantizer="lbt", bits="4/4/4", seed=0, model="resnet18",
                   data="imagenet", top1=60.0, optim="adamw")
    (section,) = build_table(tmp_path).sections
    row = paper[("resnet18", "2/2")]
    assert section.paper[("resnet18", "minmax", "2/2/32")] == float(row["sgd"])  # SGD rows stay unmarked
    assert section.paper[("resnet18", "minmax sgdt", "2/2/32")] == float(row["sgdt"])
    assert section.paper[("resnet18", "minmax adamw", "2/2/32")] == float(row["adam"])
    assert section.paper[("resnet18", "minmax adamt", "2/2/32")] == float(row["adamt"])
    assert all(c.final.n == 2 for k, c in section.cells.items() if k[2] == "2/2/32")  # one row per optimizer
    assert ("resnet18", "lbt adamw", "4/4/4") not in section.paper  # the LBT paper trained with SGD only
    assert "Lee et al., arXiv 2404.19248" in render_markdown(build_table(tmp_path))


@pytest.mark.parametrize("data", ["synthetic", "fashion_mnist", "cifar100"])
def test_paper_numbers_never_appear_beside_runs_on_other_data(tmp_path, make_fake_runs, data):
    # same model and quantizers as the paper's ImageNet table, but not ImageNet: no comparison
    make_fake_runs(tmp_path, model="resnet18", data=data)
    table = build_table(tmp_path)
    assert table.sections[0].paper == {}
    assert "(Kim et al." not in render_markdown(table)
    assert all(row["paper"] is None for row in table_rows(table))


def test_final_and_best_are_both_shown_and_labelled(results_root, best_values):
    root, expected = results_root
    table = build_table(root)
    (section,) = table.sections
    for (quantizer, bits), values in expected.items():
        cell = section.cells[("resnet20", quantizer, bits)]
        assert cell.final.values == tuple(values)
        assert cell.best.values == tuple(best_values(values))
    md = render_markdown(table)
    final_at, best_at = md.index("**final**: top1 after the last epoch"), md.index("**best**: top1 of the best epoch")
    lbt8 = section.cells[("resnet20", "lbt", "8/8/8")]
    # each table holds its own numbers: the final mean only under "final", the best mean only under "best"
    assert final_at < md.index(format_cell(lbt8.final)) < best_at < md.index(format_cell(lbt8.best))
    assert format_cell(lbt8.best) not in md[:best_at]


def test_same_seed_twice_in_a_cell_is_flagged(results_root):
    root, _ = results_root
    src = root / "fmnist_table" / "quant=fp32,seed=0"
    dst = root / "fmnist_table" / "lr=0.05,quant=fp32,seed=0"
    dst.mkdir()
    summary = json.loads((src / "summary.json").read_text())
    (dst / "summary.json").write_text(json.dumps({**summary, "run_id": dst.name}))
    (section,) = build_table(root).sections
    assert len(section.warnings) == 1 and "lr=0.05" in section.warnings[0]


def test_read_summary_treats_missing_and_torn_files_as_absent(tmp_path):
    assert read_summary(tmp_path) is None  # no summary.json
    for text in ('{"status": "fini', "", "[1, 2]", "status: finished\n"):  # torn, empty, not an object, YAML
        (tmp_path / "summary.json").write_text(text)
        assert read_summary(tmp_path) is None, text
    (tmp_path / "summary.json").write_text('{"status": "finished", "final": {"test/top1": 91.5}}')
    assert read_summary(tmp_path) == {"status": "finished", "final": {"test/top1": 91.5}}


def _edit_summary(run_dir, **changes):
    """Add to a fake run's summary.json what write_fake_run does not write (a config, the NCE entry)."""
    path = run_dir / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _finished_at(run_dir, t):
    os.utime(run_dir / "summary.json", (t, t))  # "newest" is the summary's time: when train.py wrote it


def test_a_rerun_of_the_same_config_counts_as_one_seed_and_the_table_says_it_pooled(tmp_path, write_fake_run):
    # the same config and seed in two run folders (another sweep spelled it `bits=4`), plus seed 1
    old = write_fake_run(tmp_path, "quant.bits=4,quant.grad=lbt,seed=0", quantizer="lbt", bits="4/4/4", seed=0,
                         model="resnet20", top1=80.0)
    new = write_fake_run(tmp_path, "bits=4,quant.grad=lbt,seed=0", quantizer="lbt", bits="4/4/4", seed=0,
                         model="resnet20", top1=82.0)
    write_fake_run(tmp_path, "bits=4,quant.grad=lbt,seed=1", quantizer="lbt", bits="4/4/4", seed=1,
                   model="resnet20", top1=81.0)
    _finished_at(old, 1_000_000)
    _finished_at(new, 2_000_000)  # written later, though its folder sorts first
    table = build_table(tmp_path)
    cell = table.sections[0].cells[("resnet20", "lbt", "4/4/4")]
    assert cell.final.n == 2 and sorted(cell.seeds) == [0, 1]
    assert sorted(cell.final.values) == [81.0, 82.0], "seed 0 counts once: its newest run"
    md = render_markdown(table)
    assert "81.50 ± 0.71 (2) †" in md
    assert "† resnet20, lbt, 4/4/4 pools reruns: seed 0 ran 2x" in md
    (row,) = table_rows(table)
    assert row["n"] == 2 and row["reruns"] == "0:2"
    assert count_statuses(table)["finished"] == 3, "the sweep's finished-run count still counts every run"


def test_same_seed_with_another_result_changing_config_is_not_a_rerun(tmp_path, write_fake_run):
    base = {"seed": 0, "device": "cpu", "data": {"root": "/a/datasets", "num_workers": 0}, "optim": {"lr": 0.1}}
    runs = [write_fake_run(tmp_path, f"run{i}", quantizer="lbt", bits="4/4/4", seed=0, model="resnet20",
                           top1=80.0 + i) for i in range(3)]
    _edit_summary(runs[0], config={**base, "data_root": "/a/datasets", "run_id": "run0"})
    # another machine, device and folder: the same training
    _edit_summary(runs[1], config={**base, "device": "cuda", "data_root": "/b/data", "run_id": "run1",
                                   "data": {"root": "/b/data", "num_workers": 8}})
    _edit_summary(runs[2], config={**base, "data_root": "/a/datasets", "optim": {"lr": 0.05}})  # not the same
    (section,) = build_table(tmp_path).sections
    cell = section.cells[("resnet20", "lbt", "4/4/4")]
    assert cell.reruns == ((0, 2),)
    assert [w for w in section.warnings if "differ in another override" in w and "run2" in w]


def test_non_result_keys_cover_the_keys_left_out_of_run_folder_names():
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "config.yaml").read_text())
    excluded = config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    covered = {k for k in excluded if any(k == key or k.startswith(key + ".") for key in NON_RESULT_KEYS)}
    assert covered == {k for k in excluded if not k.startswith("hydra.")}  # hydra's own keys are not in the config


@pytest.mark.parametrize("marks", ["config", "nce", "both"])
def test_an_nce_search_run_is_never_averaged_with_plain_training(tmp_path, write_fake_run, marks):
    search = write_fake_run(tmp_path, "bits=4,quant.grad=lbt,search=nce,seed=0", quantizer="lbt", bits="4/4/4",
                            seed=0, model="resnet20", top1=14.76)
    write_fake_run(tmp_path, "bits=4,quant.grad=lbt,seed=0", quantizer="lbt", bits="4/4/4", seed=0,
                   model="resnet20", top1=26.60)
    found = {"config": {"seed": 0, "search": {"_target_": "search.nce.NceSearch", "budget": 1.0}}} \
        if marks != "nce" else {}
    if marks != "config":  # the entry search.nce.NceSearch.finish() adds to the summary
        found["nce"] = {"widths": [8, 16], "macs": 1000, "params": 100}
    _edit_summary(search, **found)
    table = build_table(tmp_path)
    (section,) = table.sections
    assert section.rows == (("resnet20", "lbt"), ("resnet20 search=nce", "lbt"))
    assert section.cells[("resnet20", "lbt", "4/4/4")].final.values == (26.60,)
    assert section.cells[("resnet20 search=nce", "lbt", "4/4/4")].final.values == (14.76,)
    assert section.warnings == ()
    assert "| resnet20 search=nce | lbt | 14.76 (1) |" in render_markdown(table)


def test_finished_at_in_the_summary_decides_which_rerun_is_newest(tmp_path, write_fake_run):
    """A copied results folder (git clone) gives every summary the same mtime; finished_at still orders them."""
    old = write_fake_run(tmp_path, "quant.bits=4,quant.grad=lbt,seed=0", quantizer="lbt", bits="4/4/4", seed=0,
                         model="resnet20", top1=80.0)
    new = write_fake_run(tmp_path, "bits=4,quant.grad=lbt,seed=0", quantizer="lbt", bits="4/4/4", seed=0,
                         model="resnet20", top1=82.0)
    _edit_summary(old, finished_at=2_000_000.0)  # finished later, though its file is older
    _edit_summary(new, finished_at=1_000_000.0)
    _finished_at(old, 1_000_000)
    _finished_at(new, 2_000_000)
    cell = build_table(tmp_path).sections[0].cells[("resnet20", "lbt", "4/4/4")]
    assert cell.final.values == (80.0,)
