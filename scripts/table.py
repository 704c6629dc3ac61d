"""Results table: mean +- std over seeds of the final primary metric, model x quantizer by W/A/G bits.

Layout follows Table 1 of Kim et al. (ECCV 2024): rows are (model, gradient interval policy) with the
full-precision run first, columns are bit settings W/A/G in numeric order. The paper's ImageNet numbers
(results/reference/lbt_imagenet.csv) are shown in a second table for the models the paper reports.

    python scripts/table.py [--root results] [--name NAME] [--task TASK] [--out results/<name>/table]

writes <out>.md and <out>.csv (long format: one line per cell) and prints the Markdown.
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/table.py`: make `scripts.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.results_io import (FULL_PRECISION, ResultsError, RunRecord, bits_slug, bits_sort_key,  # noqa: E402
                                load_runs, metric_label, write_atomic)

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "results" / "reference" / "lbt_imagenet.csv"
#: our quantizer label -> the paper's method name in the reference CSV (fp32 reads its `fp_top1` column)
PAPER_METHODS = {"minmax": "minmax (gamma=1.0)", "fixed gamma=0.8": "fixed gamma=0.8",
                 "fixed gamma=0.6": "fixed gamma=0.6", "lbt": "LBT"}
#: our model names -> the paper's (timm spells MobileNetV2 with its width multiplier)
PAPER_MODELS = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
                "mobilenetv2": "mobilenetv2", "mobilenetv2_100": "mobilenetv2",
                "mobilenet_v2": "mobilenetv2"}
#: row order inside a model: full precision, then baselines, the proposed method last (as in the paper)
QUANTIZER_RANK = {FULL_PRECISION: 0, "minmax": 1, "fixed": 2, "mse": 3, "lbt": 9}


@dataclass(frozen=True)
class Cell:
    """The finished runs (one per seed) behind one table cell."""

    values: tuple[float, ...]
    seeds: tuple[int | None, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (ddof=1); None for a single run."""
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass(frozen=True)
class Section:
    """One table: runs of one experiment on one dataset with one primary metric."""

    name: str
    data: str
    task: str
    metric: str  # summary key, e.g. "test/top1"
    rows: tuple[tuple[str, str], ...]  # (model, quantizer)
    columns: tuple[str, ...]  # bit settings, full precision first
    cells: dict[tuple[str, str, str], Cell]  # (model, quantizer, bits) -> Cell
    paper: dict[tuple[str, str, str], float]  # same keys, the paper's number where it reports one
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ResultTable:
    sections: tuple[Section, ...]
    excluded: tuple[RunRecord, ...]  # failed / running / unreadable runs: listed, never averaged


def row_sort_key(row: tuple[str, str]) -> tuple:
    """Rows grouped by model; inside a model: fp32, baselines, unknown policies, LBT last (paper order)."""
    model, quantizer = row
    return (model, QUANTIZER_RANK.get(quantizer.split()[0], 5), quantizer)


def load_reference(path: Path = REFERENCE_CSV) -> dict[tuple[str, str, str], float]:
    """The paper's ImageNet top-1 as {(paper model, paper method, bits or "fp32"): value}; {} if absent."""
    if not Path(path).is_file():
        return {}
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    ref: dict[tuple[str, str, str], float] = {}
    for row in csv.DictReader(lines):
        for column, value in row.items():
            if not value or column in ("model", "method"):
                continue
            bits = FULL_PRECISION if column == "fp_top1" else column
            ref[(row["model"], row["method"], bits)] = float(value)
    return ref


def _paper_value(ref: dict, model: str, quantizer: str, bits: str) -> float | None:
    paper_model = PAPER_MODELS.get(model)
    if paper_model is None:
        return None
    if quantizer == FULL_PRECISION:  # the paper's FP number is the same on every method line; take LBT's
        return ref.get((paper_model, "LBT", FULL_PRECISION))
    method = PAPER_METHODS.get(quantizer)
    return None if method is None else ref.get((paper_model, method, bits_slug(bits)))


def _section(key: tuple[str, str, str, str], runs: list[RunRecord], ref: dict) -> Section:
    name, data, task, metric = key
    grouped: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for r in runs:
        grouped[(r.model, r.quantizer, r.bits)].append(r)
    cells, warnings = {}, []
    for k, rs in sorted(grouped.items()):
        seeds = [r.seed for r in rs]
        if len(set(seeds)) < len(seeds):
            # same seed twice means the runs differ in some other override: averaging them would be wrong
            # silently, so say it (filter with --name, or give each variant its own experiment name)
            warnings.append(f"{'/'.join(k)}: {len(rs)} runs share seeds {seeds} (they differ in another "
                            f"override: {', '.join(r.run_id for r in rs)})")
        cells[k] = Cell(values=tuple(r.value for r in rs), seeds=tuple(seeds))
    rows = tuple(sorted({(m, q) for m, q, _ in cells}, key=row_sort_key))
    columns = tuple(sorted({b for _, _, b in cells}, key=bits_sort_key))
    paper = {}
    if metric_label(metric) == "top1" and ref:
        for model, quantizer in rows:
            for bits in columns:
                v = _paper_value(ref, model, quantizer, bits)
                if v is not None:
                    paper[(model, quantizer, bits)] = v
    return Section(name=name, data=data, task=task, metric=metric, rows=rows, columns=columns,
                   cells=cells, paper=paper, warnings=tuple(warnings))


def build_table(root: str | Path = "results", name: str | None = None, *, task: str | None = None,
                reference: str | Path | None = REFERENCE_CSV) -> ResultTable:
    """Aggregate every `<root>/**/summary.json` (filtered by experiment `name` / `task`) into tables.

    One Section per (experiment, dataset, task, metric), so runs that must not be averaged together never
    meet in a cell. Runs that did not finish with a final metric go to `excluded`. Raises ResultsError.
    """
    runs = load_runs(root, name=name, task=task)
    ref = load_reference(Path(reference)) if reference is not None else {}
    by_section: dict[tuple[str, str, str, str], list[RunRecord]] = defaultdict(list)
    for r in runs:
        if r.counts:
            by_section[(r.name, r.data, r.task, r.metric)].append(r)
    sections = tuple(_section(k, rs, ref) for k, rs in sorted(by_section.items()))
    return ResultTable(sections=sections, excluded=tuple(r for r in runs if not r.counts))


def format_cell(cell: Cell | None, digits: int = 2) -> str:
    """"mean ± std (n)"; a single run has no spread: "mean (1)"."""
    if cell is None:
        return ""
    if cell.std is None:
        return f"{cell.mean:.{digits}f} (1)"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f} ({cell.n})"


def _digits(section: Section) -> int:
    # metrics on a 0-1 scale (mAP from some tools) need more decimals than percentages or dB
    return 4 if all(abs(v) <= 1 for c in section.cells.values() for v in c.values) else 2


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def render_markdown(table: ResultTable) -> str:
    """The whole report: one table per section (plus the paper's numbers), then the runs not counted."""
    out: list[str] = []
    for s in table.sections:
        label, digits = metric_label(s.metric), _digits(s)
        out += [f"## {s.name}: {s.data}, {label}", "",
                f"Final {label}, mean ± std over seeds (number of seeds); columns are W/A/G bits.", ""]
        body = [[m, q] + [format_cell(s.cells.get((m, q, b)), digits) for b in s.columns] for m, q in s.rows]
        out += _md_table(["model", "quantizer", *s.columns], body) + [""]
        paper_rows = [(m, q) for m, q in s.rows if any((m, q, b) in s.paper for b in s.columns)]
        if paper_rows:
            out += ["Paper (Kim et al., ECCV 2024, Table 1: ImageNet top-1), same cells:", ""]
            body = [[m, q] + [f"{s.paper[(m, q, b)]:.1f}" if (m, q, b) in s.paper else "" for b in s.columns]
                    for m, q in paper_rows]
            out += _md_table(["model", "quantizer", *s.columns], body) + [""]
        out += [f"Warning: {w}" for w in s.warnings] + ([""] if s.warnings else [])
    if not table.sections:
        out += ["No finished runs with a final metric.", ""]
    if table.excluded:
        out += [f"### Not counted ({len(table.excluded)})", ""]
        out += [f"- `{r.name}/{r.run_id}` {r.why_excluded}" for r in table.excluded] + [""]
    return "\n".join(out)


CSV_COLUMNS = ("name", "data", "task", "metric", "model", "quantizer", "bits", "mean", "std", "n", "seeds",
               "paper")


def table_rows(table: ResultTable) -> list[dict[str, object]]:
    """Long format, one dict per cell (the CSV's lines and the W&B table's rows)."""
    rows = []
    for s in table.sections:
        for (model, quantizer, bits), c in sorted(s.cells.items(), key=lambda kv: (
                row_sort_key(kv[0][:2]), bits_sort_key(kv[0][2]))):
            rows.append({"name": s.name, "data": s.data, "task": s.task, "metric": s.metric, "model": model,
                         "quantizer": quantizer, "bits": bits, "mean": c.mean, "std": c.std, "n": c.n,
                         "seeds": " ".join(str(x) for x in c.seeds),
                         "paper": s.paper.get((model, quantizer, bits))})
    return rows


def render_csv(table: ResultTable) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table_rows(table):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_table(table: ResultTable, out: str | Path) -> tuple[Path, Path]:
    """Write `<out>.md` and `<out>.csv` atomically; returns their paths."""
    out = Path(out)
    return (write_atomic(out.with_name(out.name + ".md"), render_markdown(table)),
            write_atomic(out.with_name(out.name + ".csv"), render_csv(table)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="results", help="folder holding <name>/<run_id>/summary.json")
    parser.add_argument("--name", help="only this experiment name")
    parser.add_argument("--task", help="only this task (classification, super_resolution, detection, ...)")
    parser.add_argument("--out", help="output stem: writes OUT.md and OUT.csv (default <root>/<name>/table, "
                                      "or <root>/table without --name)")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.root, args.name, task=args.task)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.root) / (args.name or "") / "table"
    md, csv_path = write_table(table, out)
    print(render_markdown(table))
    print(f"wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
