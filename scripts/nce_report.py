"""NCE report: the original vs the NCE-found networks retrained from scratch, with MACs and params; the found widths.

    python scripts/nce_report.py --search nce_fmnist_search --name nce_fmnist [--root results] [--input 1x28x28]

reads the search runs (results/<search>/*/summary.json: the `nce` entry) and the retraining runs
(results/<name>/*/summary.json), and writes
- results/<name>/nce_table.{md,csv}: per model, final / best top-1 mean ± std over seeds, MACs and params per sample
  (counted on the network each run's stored model config builds, models.widths.count_cost);
- results/<name>/nce_widths.png: each layer's original width and the width found by each search, the search's
  expected width per layer over its steps, and its expected and found MACs (and expected params) against the
  budget (from metrics.jsonl).
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from models.widths import count_cost
from runtime import atomic
from reports.results import ResultsError, load_runs, read_metrics, read_summary
from reports.results_table import one_run_per_seed
from scripts.plot import plt, save_figure  # Agg backend, atomic PNG writes


def network(model_config: dict, **model_kwargs) -> torch.nn.Module:
    """The network of a run's stored model config (its `init_from`, where it started, is not the builder's)."""
    return instantiate({k: v for k, v in model_config.items() if k != "init_from"}, **model_kwargs)


def model_cost(model_config: dict, example: torch.Tensor, num_classes: int) -> dict[str, int]:
    return count_cost(network(model_config, num_classes=num_classes, in_channels=example.shape[1]), example)


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(root: Path, name: str, example: torch.Tensor, num_classes: int) -> tuple[str, list[dict]]:
    runs = [r for r in load_runs(root, name=name) if r.counts and r.path.parent == root / name]  # this folder only
    runs, _ = one_run_per_seed(runs)  # a seed's reruns count once
    if not runs:
        raise ResultsError(f"no finished runs named {name!r} under {root}")
    by_model: dict[str, list] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    rows = []
    for model, group in by_model.items():
        config = read_summary(group[0].path)["config"]["model"]
        cost = model_cost(config, example, num_classes)
        rows.append({"model": model, "bits": group[0].bits, "seeds": len(group),
                     "final": [r.value("final") for r in group], "best": [r.value("best") for r in group],
                     "widths": config.get("widths"), **cost})
    base = max(rows, key=lambda r: r["widths"] is None)  # the unsearched network, if there is one
    lines = ["| model | W/A/G | seeds | final top-1 (%) | best top-1 (%) | MACs | params | MACs vs original |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["widths"] is not None):
        lines.append(f"| {r['model']} | {r['bits']} | {r['seeds']} | {mean_std(r['final'])} | {mean_std(r['best'])} | "
                     f"{r['macs'] / 1e6:.2f}M | {r['params'] / 1e3:.1f}k | {r['macs'] / base['macs']:.3f}x |")
    widths = [f"- {r['model']}: widths {r['widths']}" for r in rows if r["widths"] is not None]
    return "\n".join(lines + [""] + widths) + "\n", rows


def widths_figure(root: Path, search: str, path: Path) -> Path:
    runs = [r for r in load_runs(root, name=search) if r.status == "finished" and r.path.parent == root / search]
    found = [(r, read_summary(r.path)["nce"]) for r in runs]
    if not found:
        raise ResultsError(f"no finished NCE search named {search!r} under {root}")
    layers = found[0][1]["layers"]
    fig, (bars, curves, cost) = plt.subplots(1, 3, figsize=(19, 4.2))
    x = range(len(layers))
    n = len(found) + 1
    history = read_metrics(found[0][0].path)
    original = found[0][1]["original_widths"]  # the searched network's, in the search's group order
    bars.bar([i - 0.4 + 0.8 / n / 2 for i in x], original, width=0.8 / n, label="original", color="0.6")
    for k, (run, nce) in enumerate(found, start=1):
        bars.bar([i - 0.4 + 0.8 / n * (k + 0.5) for i in x], nce["widths"], width=0.8 / n,
                 label=f"found (budget_mode={read_summary(run.path)['config']['search'].get('budget_mode', 'at_most')}, "
                       f"seed {run.seed}): {nce['macs'] / nce['original_macs']:.2f}x MACs")
    bars.set_xticks(list(x), [layer.replace(".conv1", "") for layer in layers], rotation=45, ha="right")
    bars.set_ylabel("width (channels)")
    bars.set_title("NCE: each searched width, original vs found")
    bars.legend(fontsize=8)
    for layer in layers:
        steps = [row["step"] for row in history if f"nce/expected_width/{layer}" in row]
        values = [row[f"nce/expected_width/{layer}"] for row in history if f"nce/expected_width/{layer}" in row]
        curves.plot(steps, values, label=layer.replace(".conv1", ""))
    curves.set_xlabel("step")
    curves.set_ylabel("expected width E[C]")
    curves.set_title(f"expected width per block during the search (seed {found[0][0].seed})")
    curves.legend(fontsize=7, ncol=3)
    for key, label in [("nce/expected_macs_vs_budget", "E[MACs] / budget"),
                       ("nce/found_macs_vs_budget", "found (argmax, narrowed) MACs / budget"),
                       ("nce/expected_params_vs_budget", "E[params] / budget")]:
        rows = [row for row in history if key in row]
        cost.plot([row["step"] for row in rows], [row[key] for row in rows], label=label)
    tolerance = read_summary(found[0][0].path)["config"]["search"].get("tolerance", 0.0)
    cost.axhspan(1 - tolerance, 1.0, color="0.85", label=f"target band [1 - {tolerance}, 1]")
    cost.axhline(1.0, color="k", lw=0.8)
    cost.set_xlabel("step")
    cost.set_ylabel("cost / budget")
    cost.set_title("cost vs budget during the search")
    cost.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="results")
    parser.add_argument("--search", required=True, help="experiment name of the search run(s)")
    parser.add_argument("--name", required=True, help="experiment name of the retraining runs")
    parser.add_argument("--input", default="1x28x28", help="C x H x W of one sample, for MACs (default Fashion-MNIST)")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        shape = [int(v) for v in args.input.split("x")]
        if len(shape) != 3:
            raise ValueError
    except ValueError:
        print(f"error: --input={args.input} is invalid: use CxHxW, e.g. 1x28x28", file=sys.stderr)
        return 2
    root = Path(args.root)
    try:
        markdown, rows = table(root, args.name, torch.zeros(1, *shape), args.classes)
        figure = widths_figure(root, args.search, root / args.name / "nce_widths.png")
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = root / args.name / "nce_table"
    atomic.write_text(out.with_suffix(".md"), markdown)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "bits", "seed_index", "final_top1", "best_top1", "macs", "params"])
    for r in rows:
        for i, (final, best) in enumerate(zip(r["final"], r["best"])):
            writer.writerow([r["model"], r["bits"], i, final, best, r["macs"], r["params"]])
    atomic.write_text(out.with_suffix(".csv"), buf.getvalue())
    print(markdown)
    print(f"wrote {out}.md, {out}.csv, {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
