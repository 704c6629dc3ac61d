"""A results table as text: Markdown (final and best, mean ± std (seeds), paper numbers, rerun notes) and CSV, written
atomically. The table itself is built by reports.results_table."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from reports.results import bits_sort_key, metric_label
from reports.results_table import RERUN_MARK, WHICH, ResultTable, Section, Stats, row_sort_key
from runtime import atomic


def format_cell(stats: Stats | None, digits: int = 2) -> str:
    """"mean ± std (n)"; a single run has no spread: "mean (1)"."""
    if stats is None:
        return ""
    if stats.std is None:
        return f"{stats.mean:.{digits}f} (1)"
    return f"{stats.mean:.{digits}f} ± {stats.std:.{digits}f} ({stats.n})"


def _digits(section: Section) -> int:
    # metrics on a 0-1 scale (mAP from some tools) need more decimals than percentages or dB
    values = [v for c in section.cells.values() for s in (c.final, c.best) if s for v in s.values]
    return 4 if all(abs(v) <= 1 for v in values) else 2


def _cell_text(section: Section, key: tuple[str, str, str], which: str, digits: int) -> str:
    """format_cell of the cell's `which` value, marked RERUN_MARK when it pooled reruns."""
    cell = section.cells.get(key)
    if cell is None:
        return ""
    text = format_cell(cell.stats(which), digits)
    return f"{text} {RERUN_MARK}" if text and cell.reruns else text


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def render_markdown(table: ResultTable) -> str:
    """The whole report: per section the final and the best table (plus the paper's numbers), then the runs
    not counted."""
    out: list[str] = []
    for s in table.sections:
        label, digits = metric_label(s.metric), _digits(s)
        header = ["model", "quantizer", *s.columns]
        out += [f"## {s.name}: {s.data}, {label}", ""]
        for which, what in WHICH.items():
            out += [f"**{which}**: {label} {what}, mean ± std over seeds (number of seeds); "
                    "columns are W/A/G bits.", ""]
            body = [[m, q] + [_cell_text(s, (m, q, b), which, digits) for b in s.columns] for m, q in s.rows]
            out += _md_table(header, body) + [""]
        paper_rows = [(m, q) for m, q in s.rows if any((m, q, b) in s.paper for b in s.columns)]
        if paper_rows:
            out += ["**paper** (Kim et al., ECCV 2024, Table 1, for W/A/G; Lee et al., arXiv 2404.19248, TRS, "
                    "for W/A/32: ImageNet top-1), same cells:", ""]
            body = [[m, q] + [f"{s.paper[(m, q, b)]:.1f}" if (m, q, b) in s.paper else "" for b in s.columns]
                    for m, q in paper_rows]
            out += _md_table(header, body) + [""]
        out += [w if w.startswith(RERUN_MARK) else f"Warning: {w}" for w in s.warnings]
        out += [""] if s.warnings else []
    if not table.sections:
        out += ["No finished runs with a final metric.", ""]
    if table.excluded:
        out += [f"### Not counted ({len(table.excluded)})", ""]
        out += [f"- `{r.name}/{r.run_id}` {r.why_excluded}" for r in table.excluded] + [""]
    return "\n".join(out)


#: `n` counts seeds; `reruns` lists "seed:times" for each seed that ran more than once (pooled into one, see RERUN_MARK)
CSV_COLUMNS = ("name", "data", "task", "metric", "model", "quantizer", "bits", "n", "seeds",
               "final_mean", "final_std", "best_mean", "best_std", "paper", "reruns")


def table_rows(table: ResultTable) -> list[dict[str, object]]:
    """Long format, one dict per cell (the CSV's lines and the W&B table's rows)."""
    rows = []
    for s in table.sections:
        for (model, quantizer, bits), c in sorted(s.cells.items(), key=lambda kv: (
                row_sort_key(kv[0][:2]), bits_sort_key(kv[0][2]))):
            row = {"name": s.name, "data": s.data, "task": s.task, "metric": s.metric, "model": model,
                   "quantizer": quantizer, "bits": bits, "n": c.final.n,
                   "seeds": " ".join(str(x) for x in c.seeds)}
            for which in WHICH:
                stats = c.stats(which)
                row[f"{which}_mean"] = stats.mean if stats else None
                row[f"{which}_std"] = stats.std if stats else None
            rows.append({**row, "paper": s.paper.get((model, quantizer, bits)),
                         "reruns": " ".join(f"{seed}:{times}" for seed, times in c.reruns)})
    return rows


def render_csv(table: ResultTable) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table_rows(table):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_table(table: ResultTable, out: str | Path, *, command: str | None = None) -> tuple[Path, Path]:
    """Write `<out>.md` (headed by `command`, the one that made the runs, when given) and `<out>.csv` atomically;
    returns their paths."""
    out = Path(out)
    md, csv_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    atomic.write_text(md, (f"Made by: `{command}`\n\n" if command else "") + render_markdown(table))
    atomic.write_text(csv_path, render_csv(table))
    return md, csv_path
