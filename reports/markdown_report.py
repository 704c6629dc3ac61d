"""What the Markdown report scripts (scripts/*_report.py) share: the mean ± std cell and the command line
(--root, --name, --out; a ResultsError is one line on stderr and exit code 2)."""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

from reports.results import ResultsError
from runtime import atomic


def mean_std(values: list[float], fmt: str, empty: str = "-") -> str:
    """`mean ± std (n)` over seeds, `mean (1)` for one value, `empty` for none."""
    if not values:
        return empty
    mean = fmt.format(statistics.fmean(values))
    return f"{mean} ± {fmt.format(statistics.stdev(values))} ({len(values)})" if len(values) > 1 else f"{mean} (1)"


def report_main(report: Callable[[str, str], str], description: str, argv: list[str] | None = None) -> int:
    """Print `report(root, name)` and also write it to --out (atomically); 2 with one line if the runs are missing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default="results")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", help="also write the Markdown here")
    args = parser.parse_args(argv)
    try:
        text = report(args.root, args.name)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        atomic.write_text(Path(args.out), text)
    return 0
