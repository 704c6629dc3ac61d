"""Results table from run folders: final and best metric, mean ± std over seeds, model x quantizer by W/A/G bits.

    python scripts/table.py [--root results] [--name NAME] [--task TASK] [--out results/<name>/table] [--command C]

writes <out>.md and <out>.csv (long format: one line per cell) and prints the Markdown. The table itself is built
by reports.results_table (also used by the sweep callback); this file is only the command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.results import ResultsError
from reports.render_table import render_markdown, write_table
from reports.results_table import build_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="results", help="folder holding <name>/<run_id>/summary.json")
    parser.add_argument("--name", help="only this experiment name")
    parser.add_argument("--task", help="only this task (classification, super_resolution, detection, ...)")
    parser.add_argument("--out", help="output stem: writes OUT.md and OUT.csv (default <root>/<name>/table, "
                                      "or <root>/table without --name)")
    parser.add_argument("--command", help="the command that made the runs, written at the top of OUT.md")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.root, args.name, task=args.task)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.root) / (args.name or "") / "table"
    md, csv_path = write_table(table, out, command=args.command)
    print(render_markdown(table))
    print(f"wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
