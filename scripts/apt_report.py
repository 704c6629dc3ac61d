"""What an APT comparison's runs did, beside what they reached: per configuration (bits label: fp32, apt8 = fixed
int8, apt8-24 = APT), mean ± std over seeds of the final and best top-1, the bit-weighted MAC cost relative to 32-bit
(`apt/cost`, docs/methods.md §4.4) and the mean bits per role at the end of training, and how many layers ended above
8 bits per role.

    python scripts/apt_report.py --name apt_fmnist [--root results] [--out results/apt_fmnist/report.md]
"""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/apt_report.py` from the checkout

from reports.results import ResultsError, load_runs, read_metrics  # noqa: E402
from reports.markdown_report import mean_std, report_main  # noqa: E402
from reports.results_table import one_run_per_seed  # noqa: E402


def _last_logged(rows: list[dict]) -> dict:
    """The last row that carries APT statistics (a logging step), or {}."""
    return next((r for r in reversed(rows) if "apt/cost" in r), {})


def _per_epoch(histories: list[list[dict]]) -> str:
    """Test top-1 after each epoch, mean over runs, then the lowest any run had after any epoch:
    `63.2 / 78.9 / 89.9; 42.3`."""
    curves = [[r["test/top1"] for r in rows if "test/top1" in r and "train/loss" not in r] for rows in histories]
    curves = [c for c in curves if c]
    if not curves:
        return "-"
    epochs = min(len(c) for c in curves)
    means = " / ".join(f"{statistics.fmean(c[e] for c in curves):.1f}" for e in range(epochs))
    return f"{means}; {min(v for c in curves for v in c):.1f}"


def report(root: str, name: str) -> str:
    runs, _ = one_run_per_seed([r for r in load_runs(root, name=name) if r.status == "finished"])
    if not runs:
        raise ResultsError(f"no finished runs under {root}/{name}")
    groups: dict[str, list] = defaultdict(list)
    for run in runs:
        groups[run.bits].append(run)
    lines = [f"# {name}: accuracy and cost per configuration (mean ± std over seeds, (n) runs)", "",
             "| config | final top-1 | best top-1 | top-1 after each epoch (mean); lowest of any run | apt/cost (x 32-bit MACs) "
             "| W / A / G bits (mean over layers) | layers > 8 bits (W / A / G, of) |",
             "|---|---:|---:|---|---:|---|---|"]
    for bits in sorted(groups, key=lambda b: (b != "fp32", b)):
        members = groups[bits]
        final = [r.final["test/top1"] for r in members if "test/top1" in r.final]
        best = [r.best["test/top1"] for r in members if "test/top1" in r.best]
        histories = [read_metrics(r.path) for r in members]
        last = [_last_logged(rows) for rows in histories]
        per_epoch = _per_epoch(histories)
        last = [row for row in last if row]
        cost = [row["apt/cost"] for row in last]
        roles = " / ".join(mean_std([row[f"apt/bits_{k}"] for row in last], "{:.1f}").split(" (")[0]
                           for k in "wag") if last else "-"
        promoted = "-"
        if last:
            counts = [[sum(1 for key, v in row.items() if key.startswith(f"bits_{k}/") and v > 8) for k in "wag"]
                      for row in last]
            layers = sum(1 for key in last[0] if key.startswith("bits_g/"))
            promoted = " / ".join(f"{statistics.fmean(c[i] for c in counts):.1f}" for i in range(3)) + f" (of {layers})"
        lines.append(f"| {bits} | {mean_std(final, '{:.2f}')} | {mean_std(best, '{:.2f}')} | {per_epoch} | "
                     f"{mean_std(cost, '{:.4f}') if cost else '-'} | {roles} | {promoted} |")
    lines += ["", "fp32: 1.0 by definition; all-8-bit gives 1/16 = 0.0625. Bits and cost at the last logging step."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return report_main(report, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
