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
