"""Results table: mean ± std over seeds of the primary metric, final and best, model x quantizer by W/A/G bits.

Layout follows Table 1 of Kim et al. (ECCV 2024): rows are (model, gradient interval policy) with the
full-precision run first, columns are bit settings W/A/G in numeric order. Each cell is shown twice, labelled:
the metric after the last epoch ("final") and the best epoch's ("best", what the paper's official code
reports). The papers' ImageNet numbers are shown beside runs on ImageNet: Kim et al.'s (LBT,
results/reference/lbt_imagenet.csv) beside SGD runs with quantized gradients, Lee et al.'s (TRS, arXiv 2404.19248,
results/reference/trs_imagenet.csv) beside runs with full-precision gradients (W/A/32), per optimizer: SGD, SGDT,
AdamW (their "Adam"), AdamT.

Runs are grouped by the labels the trainer wrote (`runtime.run_info.run_labels`: the Hydra config choices), so
runs of different models or datasets never share a row or a cell; an architecture search run (search=nce) has its own
row ("resnet20 search=nce", `reports.results.model_label`). A cell counts seeds, not run folders: runs of one seed
with the same result-changing config (a later sweep ran it again) count once, and the cell is marked † with a line
under the table saying which seeds ran more than once (`one_run_per_seed`).
"""
from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from reports.results import FULL_PRECISION, RunRecord, bits_slug, bits_sort_key, load_runs, metric_label

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "results" / "reference" / "lbt_imagenet.csv"
TRS_REFERENCE_CSV = REFERENCE_CSV.with_name("trs_imagenet.csv")
#: our `optim` label -> the TRS paper's column (their Adam baseline is our AdamW with decoupled weight decay)
TRS_PAPER_OPTIMIZERS = {"sgd": "sgd", "sgd_multistep": "sgd", "sgdt": "sgdt", "adamw": "adam", "adamt": "adamt"}
#: the data label (config choice) of the paper's dataset: its numbers are shown only beside runs on it
PAPER_DATA = "imagenet"
#: our quantizer label -> the paper's method name in the reference CSV (fp32 reads its `fp_top1` column)
PAPER_METHODS = {"minmax": "minmax (gamma=1.0)", "fixed gamma=0.8": "fixed gamma=0.8",
                 "fixed gamma=0.6": "fixed gamma=0.6", "lbt": "LBT"}
#: our model labels -> the paper's (timm spells MobileNetV2 with its width multiplier)
PAPER_MODELS = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
                "mobilenet_v2": "mobilenetv2", "timm:resnet18": "resnet18", "timm:resnet34": "resnet34",
                "timm:resnet50": "resnet50", "timm:mobilenetv2_100": "mobilenetv2"}
#: row order inside a model: full precision, then baselines, the proposed method last (as in the paper)
QUANTIZER_RANK = {FULL_PRECISION: 0, "minmax": 1, "fixed": 2, "mse": 3, "lbt": 9}
#: the two values of a run a table shows, with the sentence that says what each is
WHICH = {"final": "after the last epoch",
         "best": "of the best epoch (the official LBT code reports this)"}
#: marks a cell that pooled reruns, and starts the line under the table that says which seeds ran more than once
RERUN_MARK = "†"


@dataclass(frozen=True)
class Stats:
    """One number per seed, summarised."""

    values: tuple[float, ...]

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
class Cell:
    """The finished runs (one per seed) behind one table cell: their final and their best primary metric."""

    seeds: tuple[int | None, ...]
    final: Stats
    best: Stats | None  # None when no run recorded a best value
    reruns: tuple[tuple[int, int], ...] = ()  # (seed, times it ran) for each seed run more than once, same config

    @property
    def runs(self) -> int:
        """The finished runs behind the cell, reruns included (what a sweep's count of finished runs counts)."""
        return self.final.n + sum(times - 1 for _, times in self.reruns)

    @property
    def values(self) -> tuple[float, ...]:
        """The final values, one per run."""
        return self.final.values

    def stats(self, which: str) -> Stats | None:
        return self.final if which == "final" else self.best


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
    warnings: tuple[str, ...]  # lines under the tables: RERUN_MARK footnotes, and warnings


@dataclass(frozen=True)
class ResultTable:
    sections: tuple[Section, ...]
    excluded: tuple[RunRecord, ...]  # failed / running / unreadable runs: listed, never averaged


def row_sort_key(row: tuple[str, str]) -> tuple:
    """Rows grouped by model; inside a model: fp32, baselines, unknown policies, LBT last (paper order)."""
    model, quantizer = row
    return (model, QUANTIZER_RANK.get(quantizer.split()[0], 5), quantizer)


def _reference_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a paper-numbers CSV (blank and '#' comment lines skipped); [] when the file is absent."""
    if not Path(path).is_file():
        return []
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(lines))


def load_reference(path: Path = REFERENCE_CSV) -> dict[tuple[str, str, str], float]:
    """The paper's ImageNet top-1 as {(paper model, paper method, bits or "fp32"): value}; {} if absent."""
    ref: dict[tuple[str, str, str], float] = {}
    for row in _reference_rows(path):
        for column, value in row.items():
            if not value or column in ("model", "method"):
                continue
            bits = FULL_PRECISION if column == "fp_top1" else column
            ref[(row["model"], row["method"], bits)] = float(value)
    return ref


def load_trs_reference(path: Path = TRS_REFERENCE_CSV) -> dict[tuple[str, str, str], float]:
    """The TRS paper's ImageNet top-1 as {(paper model, paper optimizer, "W/A"): value}; {} if absent."""
    ref: dict[tuple[str, str, str], float] = {}
    for row in _reference_rows(path):
        for column in set(TRS_PAPER_OPTIMIZERS.values()):
            if row.get(column):
                ref[(row["model"], column, row["bits_wa"])] = float(row[column])
    return ref


def _paper_value(ref: dict, trs_ref: dict, run: RunRecord) -> float | None:
    paper_model = PAPER_MODELS.get(run.model)
    if paper_model is None:
        return None
    if run.quantizer == FULL_PRECISION:  # the paper's FP number is the same on every method line; take LBT's
        return ref.get((paper_model, "LBT", FULL_PRECISION))
    w, a, *g = run.bits.split("/")
    if g == ["32"]:  # full-precision gradients: the TRS paper's setting
        optimizer = TRS_PAPER_OPTIMIZERS.get(run.optim)
        return None if optimizer is None else trs_ref.get((paper_model, optimizer, f"{w}/{a}"))
    method = PAPER_METHODS.get(run.quantizer)
    if method is None or TRS_PAPER_OPTIMIZERS.get(run.optim) != "sgd":  # the LBT paper trains with SGD
        return None
    return ref.get((paper_model, method, bits_slug(run.bits)))


def _stats(values: list[float | None]) -> Stats | None:
    kept = tuple(v for v in values if v is not None)
    return Stats(kept) if kept else None


def one_run_per_seed(runs: list[RunRecord]) -> tuple[list[RunRecord], list[list[RunRecord]]]:
    """The runs a cell averages (in `runs` order), and the groups of reruns it pooled.

    Runs of one seed with one result-changing config (`RunRecord.config_key`) are one training run done again (a
    later sweep, another run folder): counting each as a seed would inflate n and shrink the std. Of such reruns
    the newest is kept (summary.json written last; the later folder on a tie), not their mean: an unchanged config
    is rerun after something was fixed (the code, a node), so the newest number is the current one, and a mean
    would mix a rerun-to-rerun spread into the spread over seeds. Runs without a seed are never pooled.
    """
    groups: dict[object, list[RunRecord]] = defaultdict(list)
    for r in runs:
        groups[(r.seed, r.config_key) if r.seed is not None else id(r)].append(r)
    kept = [max(g, key=lambda r: (r.written_at, str(r.path))) for g in groups.values()]
    return kept, [g for g in groups.values() if len(g) > 1]


def _section(key: tuple[str, str, str, str], runs: list[RunRecord], ref: dict, trs_ref: dict) -> Section:
    name, data, task, metric = key
    grouped: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for r in runs:
        grouped[(r.model, r.quantizer, r.bits)].append(r)
    cells, warnings = {}, []
    for k, all_runs in sorted(grouped.items()):
        rs, pooled = one_run_per_seed(all_runs)
        if pooled:
            times = ", ".join(f"seed {g[0].seed} ran {len(g)}x" for g in pooled)
            folders = ", ".join(f"`{r.run_id}`" for g in pooled for r in g)
            warnings.append(f"{RERUN_MARK} {', '.join(k)} pools reruns: {times} with the same config ({folders}); "
                            "each seed counts once, with its newest run")
        seeds = [r.seed for r in rs]
        if len(set(seeds)) < len(seeds):
            # same seed twice means the runs differ in some other override: averaging them would be wrong
            # silently, so say it (filter with --name, or give each variant its own experiment name)
            warnings.append(f"{'/'.join(k)}: {len(rs)} runs share seeds {seeds} (they differ in another "
                            f"override: {', '.join(r.run_id for r in rs)})")
        cells[k] = Cell(seeds=tuple(seeds), final=_stats([r.value("final") for r in rs]),
                        best=_stats([r.value("best") for r in rs]),
                        reruns=tuple((g[0].seed, len(g)) for g in pooled))
    rows = tuple(sorted({(m, q) for m, q, _ in cells}, key=row_sort_key))
    columns = tuple(sorted({b for _, _, b in cells}, key=bits_sort_key))
    paper = {}
    if data == PAPER_DATA and metric_label(metric) == "top1":
        for k, rs in grouped.items():  # a cell's runs share model, row label and bits, hence optimizer
            v = _paper_value(ref, trs_ref, rs[0])
            if v is not None:
                paper[k] = v
    return Section(name=name, data=data, task=task, metric=metric, rows=rows, columns=columns,
                   cells=cells, paper=paper, warnings=tuple(warnings))


def build_table(root: str | Path = "results", name: str | None = None, *, task: str | None = None,
                reference: str | Path | None = REFERENCE_CSV,
                trs_reference: str | Path | None = TRS_REFERENCE_CSV) -> ResultTable:
    """Aggregate every `<root>/**/summary.json` (filtered by experiment `name` / `task`) into tables.

    One Section per (experiment, dataset, task, metric) and one row per (model, quantizer) label, so runs that
    must not be averaged together never meet in a cell. Runs that did not finish with a final metric go to
    `excluded`. Raises reports.results.ResultsError (one line).
    """
    runs = load_runs(root, name=name, task=task)
    ref = load_reference(Path(reference)) if reference is not None else {}
    trs_ref = load_trs_reference(Path(trs_reference)) if trs_reference is not None else {}
    by_section: dict[tuple[str, str, str, str], list[RunRecord]] = defaultdict(list)
    for r in runs:
        if r.counts:
            by_section[(r.name, r.data, r.task, r.metric)].append(r)
    sections = tuple(_section(k, rs, ref, trs_ref) for k, rs in sorted(by_section.items()))
    return ResultTable(sections=sections, excluded=tuple(r for r in runs if not r.counts))
