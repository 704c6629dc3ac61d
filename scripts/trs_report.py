"""What a TRS comparison's runs did, beside what they reached: per optimizer, mean ± std over seeds of the accuracy
before training (model.init_from), final and best, and of the transition statistics (docs/methods.md §3.5) in the
first and the last tenth of training: the measured rate k_t, the mean distance of the latent weights to their nearest
transition point, and the step size (U_t under TRS, the lr otherwise). Runs need `log_transitions=true` (or TRS) for
the transition columns.

    python scripts/trs_report.py --name trs_fmnist [--root results] [--out results/trs_fmnist/dynamics.md]
"""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/trs_report.py` from the checkout

from reports.results import ResultsError, load_runs, read_metrics  # noqa: E402
from reports.markdown_report import mean_std, report_main  # noqa: E402
from reports.results_table import one_run_per_seed  # noqa: E402

COLUMNS = (("start", "before training"), ("final", "final"), ("best", "best"))
PHASES = ("early", "late")
CURVES = (("trs/rate", "k_t", "{:.2e}"), ("trs/distance", "distance", "{:.3f}"), ("step", "U_t or lr", "{:.2e}"))


def _phase_mean(rows: list[dict], key: str, phase: str) -> float | None:
    """Mean of `key` over the first or last tenth (at least one) of the logged training steps (the step size: U_t
    under TRS, the lr otherwise)."""
    logged = [r for r in rows if "train/loss" in r]
    n = max(1, len(logged) // 10)
    values = []
    for row in logged[:n] if phase == "early" else logged[-n:]:
        value = row.get("trs/U", row.get("train/lr")) if key == "step" else row.get(key)
        if isinstance(value, (int, float)):
            values.append(float(value))
    return statistics.fmean(values) if values else None


def report(root: str | Path, name: str) -> str:
    runs, _ = one_run_per_seed([r for r in load_runs(root, name=name) if r.counts])  # a seed's reruns count once
    if not runs:
        raise ResultsError(f"no finished runs named {name!r} under {root}")
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        rows = read_metrics(run.path)
        start = next((r for r in rows if any(k.startswith("start/") for k in r)), {})  # logged first, at step 0
        values = {"start": start.get(f"start/{run.metric.split('/', 1)[1]}"), "final": run.value("final"),
                  "best": run.value("best")}
        for phase in PHASES:
            for key, _, _ in CURVES:
                values[f"{phase} {key}"] = _phase_mean(rows, key, phase)
        for column, value in values.items():
            if isinstance(value, (int, float)):
                cells[run.optim][column].append(float(value))
    metric = runs[0].metric
    header = [f"{label} {metric}" for _, label in COLUMNS] + \
        [f"{label}, {phase} tenth" for phase in PHASES for _, label, _ in CURVES]
    lines = [f"## {name}: accuracy and transition dynamics, mean ± std over seeds (number of seeds)", "",
             "| optim | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for optim in sorted(cells):
        row = [mean_std(cells[optim][c], "{:.2f}", empty="") for c, _ in COLUMNS]
        row += [mean_std(cells[optim][f"{phase} {key}"], fmt, empty="") for phase in PHASES for key, _, fmt in CURVES]
        lines.append(f"| {optim} | " + " | ".join(row) + " |")
    lines += ["", "k_t: the fraction of quantized weights whose integer code changed in a step (mean over the logged "
              "steps of that tenth of training); distance: mean distance of the latent weights to their nearest "
              "transition point, in grid steps; U_t or lr: the weights' step size (scripts/trs_report.py)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return report_main(report, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
