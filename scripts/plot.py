"""Figures from run folders, offline (no W&B): the paper's gradient-error curves, gamma, and metric vs bits.

(a) `<group>_E_GL.png`, `<group>_E_G.png`: per-layer E(G_L) and E(G) over iterations, one subplot per layer,
    one line per quantizer (mean over seeds); Kim et al. ECCV 2024, Fig. 1/4: LBT has the lowest E(G_L) in every
    layer while not the lowest E(G). `<group>_train_loss.png`: the training loss beside it (their Fig. 4c).
(b) `<group>_gamma.png`: the clipping ratio gamma = c / g_max per layer over training (LBT settles ~0.5-0.65).
(c) `<name>_<data>_<metric>_vs_bits.png`: final primary metric vs W/A/G bits, one line per quantizer with
    std-over-seeds error bars, the full-precision level as a horizontal line; one subplot per model.
(d) runs with transition-rate scheduling (optim=sgdt/adamt, docs/methods.md §3): `<group>_transition_rate.png`,
    the target R_t against the measured running rate K_t and the per-step rate k_t, and U_t beside it;
    `<group>_TR.png`, the transition rate per layer.
(e) APT runs (docs/methods.md §4): `<group>_bits_{w,a,g}.png` and `<group>_diff_bit_{w,a,g}.png` per layer over
    iterations, `<group>_bits_map.png` (layers x iterations, colour = bits, one panel per role, mean over seeds) and
    `<group>_apt_cost.png` (mean bits per role and the bit-weighted MAC cost relative to 32-bit).
`<group>` is `<name>_<data>_<model>_<w4a4g4>`.

    python scripts/plot.py [--root results] [--name NAME] [--bits 4/4/4] [--layers L1,L2] [--out DIR]
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from collections import defaultdict
from pathlib import Path

from runtime.extras import MissingExtra

try:
    import matplotlib
except ModuleNotFoundError as e:
    raise MissingExtra("scripts/plot.py", e.name, "plots") from e

matplotlib.use("Agg")  # files only: no display on servers / CI
import matplotlib.pyplot as plt  # noqa: E402

from runtime import atomic  # noqa: E402
from reports.results import (FULL_PRECISION, ResultsError, RunRecord, bits_slug, bits_sort_key,  # noqa: E402
                             load_runs, metric_label, read_metrics)
from reports.results_table import ResultTable, build_table, one_run_per_seed, row_sort_key  # noqa: E402

#: (metrics.jsonl key prefix, y-axis label, file suffix) of the per-layer figures
LAYER_FIGURES = (("E_GL/", "E(G_L)  (mean |ĝ-g| / g_max, large gradients)", "E_GL"),
                 ("E_G/", "E(G)  (mean |ĝ-g| / g_max, all gradients)", "E_G"),
                 ("gamma/", "gamma = c / g_max", "gamma"),
                 ("TR/", "transition rate (mean between logging steps)", "TR"),
                 *((f"bits_{r}/", f"{r.upper()} bits (APT)", f"bits_{r}") for r in "wag"),
                 *((f"diff_bit_{r}/", f"diff_bit of {r.upper()} (APT)", f"diff_bit_{r}") for r in "wag"))
ROLES = {"w": "weights", "a": "activations", "g": "gradients"}


def file_stem(*labels: str) -> str:
    """File-name stem from labels; a label such as "timm:resnet18" becomes "timm-resnet18"."""
    return "_".join(label.replace(":", "-").replace("/", "-") for label in labels)


def save_figure(fig, path: Path) -> Path:
    """Render to memory, then write atomically (a reader never sees half a PNG); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return path


def mean_curve(histories: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Mean over runs (seeds) of `key` at each logged step; a step counts the runs that logged it, so a run
    that stopped early does not cut the others' curves."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for history in histories:
        for line in history:
            v = line.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v) and "step" in line:
                by_step[int(line["step"])].append(float(v))
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def layer_names(histories: list[list[dict]], prefix: str = "E_GL/") -> list[str]:
    """Quantized layers in the order the trainer logs them (module order, i.e. input to output)."""
    seen: dict[str, None] = {}
    for history in histories:
        for line in history:
            for k in line:
                if k.startswith(prefix):
                    seen.setdefault(k[len(prefix):], None)
    return list(seen)


def _grid(n: int, ncols: int = 4):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.6 * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_layer_curves(runs: list[RunRecord], out_dir: Path, *, layers: list[str] | None = None) -> list[Path]:
    """Figures (a) and (b) for every (experiment, data, model, bits) group of finished quantized runs."""
    groups: dict[tuple[str, str, str, str], dict[str, list[list[dict]]]] = defaultdict(lambda: defaultdict(list))
    finished = [r for r in runs if r.status == "finished" and r.quantizer != FULL_PRECISION]
    for r in one_run_per_seed(finished)[0]:  # a rerun of a seed is drawn once, its newest run (as in the table)
        groups[(r.name, r.data, r.model, r.bits)][r.quantizer].append(read_metrics(r.path))
    if layers is not None:  # check the selection before writing anything
        logged = {n for g in groups.values() for hs in g.values() for n in layer_names(hs)}
        if not logged.intersection(layers):
            raise ResultsError(f"--layers {','.join(layers)} names no logged layer; logged layers: "
                               f"{sorted(logged)}")
    written = []
    for (name, data, model, bits), by_quantizer in sorted(groups.items()):
        stem = file_stem(name, data, model, bits_slug(bits))
        quantizers = sorted(by_quantizer, key=lambda q: row_sort_key((model, q)))
        all_histories = [h for hs in by_quantizer.values() for h in hs]
        for prefix, ylabel, suffix in LAYER_FIGURES:
            names = [n for n in layer_names(all_histories, prefix) if layers is None or n in layers]
            if not names:
                continue
            fig, axes = _grid(len(names))
            for ax, layer in zip(axes, names):
                for q in quantizers:
                    steps, values = mean_curve(by_quantizer[q], prefix + layer)
                    ax.plot(steps, values, label=q, linewidth=1.2)
                ax.set_title(layer, fontsize=9)
                ax.set_xlabel("iteration", fontsize=8)
                ax.tick_params(labelsize=7)
            axes[0].set_ylabel(ylabel, fontsize=8)
            axes[0].legend(fontsize=7)
            fig.suptitle(f"{name}: {model} on {data}, W/A/G {bits}, mean over seeds", fontsize=10)
            written.append(save_figure(fig, out_dir / f"{stem}_{suffix}.png"))
        written += plot_apt_curves(all_histories, out_dir, stem, title=f"{name}: {model} on {data}, {bits}")
        fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
        for q in quantizers:
            ax.plot(*mean_curve(by_quantizer[q], "train/loss"), label=q, linewidth=1.2)
        ax.set(xlabel="iteration", ylabel="training loss", title=f"{model} on {data}, W/A/G {bits}")
        ax.legend(fontsize=8)
        written.append(save_figure(fig, out_dir / f"{stem}_train_loss.png"))
        trs = {q: hs for q, hs in by_quantizer.items() if any("trs/rate" in line for h in hs for line in h)}
        if trs:
            written.append(plot_transition_rates(trs, out_dir / f"{stem}_transition_rate.png",
                                                 title=f"{name}: {model} on {data}, W/A/G {bits}, mean over seeds"))
    return written


def plot_transition_rates(by_label: dict[str, list[list[dict]]], path: Path, *, title: str) -> Path:
    """Figure (d): target vs measured transition rate, U_t (log scale) and the mean distance of the latent weights to
    their nearest transition point (the TRS paper's Fig. 3a, 3b, 3d), one colour per row label; a plain optimizer's
    run (log_transitions=true) has no target and plots its lr as U_t."""
    fig, (rate_ax, u_ax, d_ax) = plt.subplots(1, 3, figsize=(15, 3.4), layout="constrained")
    for i, (label, histories) in enumerate(sorted(by_label.items())):
        colour = f"C{i}"
        rate_ax.plot(*mean_curve(histories, "trs/target"), color=colour, linestyle="--", linewidth=1.2,
                     label=f"{label}: target R_t")
        rate_ax.plot(*mean_curve(histories, "trs/rate_ema"), color=colour, linewidth=1.4,
                     label=f"{label}: measured K_t")
        rate_ax.plot(*mean_curve(histories, "trs/rate"), color=colour, linewidth=0.6, alpha=0.5,
                     label=f"{label}: measured k_t")
        u_key = "trs/U" if any("trs/U" in line for h in histories for line in h) else "train/lr"
        u_ax.plot(*mean_curve(histories, u_key), color=colour, linewidth=1.2, label=label)
        d_ax.plot(*mean_curve(histories, "trs/distance"), color=colour, linewidth=1.2, label=label)
    rate_ax.set(xlabel="iteration", ylabel="transition rate")
    d_ax.set(xlabel="iteration", ylabel="distance to nearest transition point (steps)")
    u_ax.set(xlabel="iteration", ylabel="U_t (TRS) or lr (plain)", yscale="log")
    rate_ax.legend(fontsize=7)
    u_ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
def plot_apt_curves(histories: list[list[dict]], out_dir: Path, stem: str, *, title: str) -> list[Path]:
    """Figure (e): bits per layer over training as a map per role, and the precision/compute trade-off curves."""
    roles = [r for r in ROLES if layer_names(histories, f"bits_{r}/")]
    if not roles:
        return []
    fig, axes = plt.subplots(1, len(roles), figsize=(4.6 * len(roles), 4.2), squeeze=False, layout="constrained")
    grids = {}
    for role in roles:
        names = layer_names(histories, f"bits_{role}/")
        curves = [mean_curve(histories, f"bits_{role}/{n}") for n in names]
        steps = sorted({s for xs, _ in curves for s in xs})
        grids[role] = names, steps, [[dict(zip(xs, ys)).get(s, math.nan) for s in steps] for xs, ys in curves]
    seen = [v for _, _, grid in grids.values() for row in grid for v in row if math.isfinite(v)]
    low, high = min(seen), max(seen)  # one colour scale for the three panels
    for ax, role in zip(axes[0], roles):
        names, steps, grid = grids[role]  # grid: (layers, logged steps)
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis", vmin=low,
                          vmax=high if high > low else low + 1, extent=(steps[0], steps[-1], len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set(xlabel="iteration", title=f"{ROLES[role]} bits")
    fig.colorbar(image, ax=axes[0].tolist(), label="bits (mean over seeds)")
    fig.suptitle(f"{title}: bits per layer over training", fontsize=10)
    written = [save_figure(fig, out_dir / f"{stem}_bits_map.png")]
    fig, (ax_bits, ax_cost) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    for role in roles:
        ax_bits.plot(*mean_curve(histories, f"apt/bits_{role}"), label=ROLES[role], linewidth=1.2)
    ax_bits.set(xlabel="iteration", ylabel="mean bits over layers")
    ax_bits.legend(fontsize=8)
    ax_cost.plot(*mean_curve(histories, "apt/cost"), linewidth=1.2)
    ax_cost.set(xlabel="iteration", ylabel="bit-weighted MACs / 32-bit MACs")
    fig.suptitle(title, fontsize=10)
    written.append(save_figure(fig, out_dir / f"{stem}_apt_cost.png"))
    return written


def plot_metric_vs_bits(table: ResultTable, out_dir: Path) -> list[Path]:
    """Figure (c): one file per table section, one subplot per model."""
    written = []
    for s in table.sections:
        models = sorted({m for m, _ in s.rows})
        bit_cols = [b for b in s.columns if b != FULL_PRECISION]
        fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.4), squeeze=False,
                                 layout="constrained")
        for ax, model in zip(axes[0], models):
            for _, q in [row for row in s.rows if row[0] == model and row[1] != FULL_PRECISION]:
                xs = [i for i, b in enumerate(bit_cols) if (model, q, b) in s.cells]
                cells = [s.cells[(model, q, bit_cols[i])].final for i in xs]
                ax.errorbar(xs, [c.mean for c in cells], yerr=[c.std or 0.0 for c in cells], label=q,
                            marker="o", capsize=3, linewidth=1.2)
            fp_cell = s.cells.get((model, FULL_PRECISION, FULL_PRECISION))
            if fp_cell is not None:
                fp = fp_cell.final
                ax.axhline(fp.mean, color="black", linestyle="--", linewidth=1, label=f"fp32 ({fp.mean:.2f})")
            ax.set_xticks(range(len(bit_cols)), bit_cols)
            ax.set(xlabel="W/A/G bits", ylabel=metric_label(s.metric), title=model)
            ax.legend(fontsize=7)
        fig.suptitle(f"{s.name}: {s.data}, final {metric_label(s.metric)} (mean ± std over seeds)", fontsize=10)
        stem = file_stem(s.name, s.data, metric_label(s.metric))
        written.append(save_figure(fig, out_dir / f"{stem}_vs_bits.png"))
    return written


def make_figures(root: str | Path = "results", name: str | None = None, *, bits: str | None = None,
                 layers: list[str] | None = None, out: str | Path | None = None) -> list[Path]:
    """All figures for the selected runs; returns the PNG paths. Raises ResultsError (one line)."""
    runs = load_runs(root, name=name)
    out_dir = Path(out) if out else Path(root) / (name or "") / "figures"
    if bits is not None:
        have = sorted({r.bits for r in runs if r.quantizer != FULL_PRECISION}, key=bits_sort_key)
        if bits not in have:
            raise ResultsError(f"--bits {bits!r} matches no quantized run; bit settings there: {have}")
        curve_runs = [r for r in runs if r.bits == bits]
    else:
        curve_runs = runs
    written = plot_layer_curves(curve_runs, out_dir, layers=layers)
    table = build_table(root, name)
    return written + plot_metric_vs_bits(table, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="results", help="folder holding <name>/<run_id>/summary.json")
    parser.add_argument("--name", help="only this experiment name")
    parser.add_argument("--bits", help="W/A/G setting for the per-layer curves, e.g. 4/4/4 (default: every one)")
    parser.add_argument("--layers", help="comma-separated layer names for the per-layer curves (default: all)")
    parser.add_argument("--out", help="output folder (default <root>/<name>/figures)")
    args = parser.parse_args(argv)
    layers = [x for x in args.layers.split(",") if x] if args.layers else None
    try:
        written = make_figures(args.root, args.name, bits=args.bits, layers=layers, out=args.out)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
