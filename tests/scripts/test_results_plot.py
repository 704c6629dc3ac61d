"""scripts/plot.py: PNGs from metrics.jsonl / summary.json, offline."""
import pytest

from scripts.plot import file_stem, main, make_figures, mean_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_are_written_as_non_empty_pngs(results_root, tmp_path):
    root, _ = results_root
    out = tmp_path / "figs"
    written = make_figures(root, "fmnist_table", bits="4/4/4", out=out)
    names = sorted(p.name for p in written)
    stem = "fmnist_table_fashion_mnist_resnet20_w4a4g4"
    assert names == sorted([f"{stem}_E_GL.png", f"{stem}_E_G.png", f"{stem}_gamma.png",
                            f"{stem}_train_loss.png", "fmnist_table_fashion_mnist_top1_vs_bits.png"])
    for p in written:
        data = p.read_bytes()
        assert p.parent == out and data.startswith(PNG_MAGIC) and len(data) > 5000
    assert sorted(p.name for p in out.iterdir()) == names, "atomic write left a temp file"


def test_mean_curve_averages_seeds_per_step_and_keeps_a_longer_run():
    short = [{"step": 0, "x": 1.0}, {"step": 10, "x": 3.0}]
    long = [{"step": 0, "x": 3.0}, {"step": 10, "x": 5.0}, {"step": 20, "x": 7.0}, {"step": 20, "test/top1": 1}]
    assert mean_curve([short, long], "x") == ([0, 10, 20], [2.0, 4.0, 7.0])


@pytest.mark.parametrize("args", [["--bits", "5/5/5"], ["--layers", "no.such.layer"]])
def test_bad_selection_gives_one_line_error_and_no_files(results_root, tmp_path, capsys, args):
    root, _ = results_root
    out = tmp_path / "figs"
    assert main(["--root", str(root), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not out.exists()


def test_file_names_from_labels_have_no_colons_or_slashes():
    assert file_stem("sweep", "imagenet", "timm:resnet18", "w4a4g4") == "sweep_imagenet_timm-resnet18_w4a4g4"


def test_trs_runs_get_a_target_vs_measured_transition_rate_figure(tmp_path, write_fake_run):
    import json
    for seed in (0, 1):
        run_dir = write_fake_run(tmp_path, f"optim=sgdt,seed={seed}", quantizer="minmax", bits="2/2/32", seed=seed,
                                 model="resnet20", top1=80.0, optim="sgdt")
        lines = [{"step": s, "epoch": 0, "trs/target": 5e-3 * (1 - s / 40), "trs/rate": 2e-3, "trs/rate_ema": 1e-3,
                  "trs/U": 0.1, "TR/layer1.0.conv1": 1e-3} for s in (10, 20, 30)]
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.writelines(json.dumps(x) + "\n" for x in lines)
    written = {p.name for p in make_figures(tmp_path, out=tmp_path / "fig")}
    stem = "fmnist_table_fashion_mnist_resnet20_w2a2g32"
    assert {f"{stem}_transition_rate.png", f"{stem}_TR.png"} <= written
    assert (tmp_path / "fig" / f"{stem}_transition_rate.png").stat().st_size > 1000


def test_a_rerun_of_a_seed_is_drawn_once(tmp_path, write_fake_run, monkeypatch):
    """Two folders of seed 0 with one config (a rerun) and seed 1: the curves average two runs, not three."""
    import scripts.plot as plot
    from reports.results import load_runs

    import os

    for i, (run_id, seed) in enumerate((("seed=0", 0), ("again,seed=0", 0), ("seed=1", 1))):
        run_dir = write_fake_run(tmp_path, run_id, quantizer="lbt", bits="4/4/4", seed=seed, model="resnet20",
                                 top1=80.0)
        os.utime(run_dir / "summary.json", (1e9 + i, 1e9 + i))  # written in this order, a second apart
    read = []
    real = plot.read_metrics
    monkeypatch.setattr(plot, "read_metrics", lambda path: read.append(path.name) or real(path))
    plot.plot_layer_curves(load_runs(tmp_path), tmp_path / "fig")
    assert sorted(read) == ["again,seed=0", "seed=1"]  # the newer of the two seed-0 runs
