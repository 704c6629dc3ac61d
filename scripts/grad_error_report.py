"""Gradient quantizers side by side in one table: per quantizer and W/A/G bits, the final top-1 beside what the
quantizer did to the gradients over training, i.e. E(G) and E(G_L) (docs/methods.md §1.5: mean |g_hat - g| / g_max
over all gradients and over the largest 0.1%), the clipped fraction and gamma, each averaged over layers and
logging steps of a run, then mean ± std over seeds. The per-layer curves are scripts/plot.py's figures.

    python scripts/grad_error_report.py --name grad_baselines [--root results] [--out results/grad_baselines/errors.md]
"""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/grad_error_report.py` from the checkout

from reports.results import ResultsError, bits_sort_key, load_runs, read_metrics  # noqa: E402
from reports.markdown_report import mean_std, report_main  # noqa: E402
from reports.results_table import one_run_per_seed  # noqa: E402

STATS = ("E_G", "E_GL", "clip_frac", "gamma")


def run_means(rows: list[dict]) -> dict[str, float]:
    """Each statistic averaged over every layer and logging step of one run; absent when it never logged one."""
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if "train/loss" not in row:
            continue
        for key, value in row.items():
            stat = key.split("/", 1)[0]
            if stat in STATS and "/" in key:
                values[stat].append(value)
    return {stat: statistics.fmean(v) for stat, v in values.items()}


def report(root: str, name: str) -> str:
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for run in load_runs(root, name=name):
        if run.counts:
            groups[run.bits, run.quantizer].append(run)
    if not groups:
        raise ResultsError(f"no finished runs under {root}/{name}")
    lines = [f"# {name}: accuracy beside gradient-quantization error (mean ± std over seeds, (n) runs)", "",
             "| W/A/G | quantizer | final top-1 | E(G) | E(G_L) | clipped fraction | gamma |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for bits, quantizer in sorted(groups, key=lambda k: (bits_sort_key(k[0]), k[1])):
        members, _ = one_run_per_seed(groups[bits, quantizer])  # a seed's reruns count once, as in the table
        means = [run_means(read_metrics(r.path)) for r in members]
        cells = [mean_std([m[s] for m in means if s in m], "{:.2e}" if s == "clip_frac" else "{:.4f}")
                 for s in STATS]
        top1 = mean_std([r.value("final") for r in members], "{:.2f}")
        lines.append(f"| {bits} | {quantizer} | {top1} | " + " | ".join(cells) + " |")
    lines += ["", "E(G), E(G_L): relative to the tensor's max |g|, so comparable across quantizers whatever their grid; "
              "gamma: the clip over max |g| that the quantizer used (1 for per-row and float-format choices)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return report_main(report, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
