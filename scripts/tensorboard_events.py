"""TensorBoard event files for runs that were logged without `logger=tensorboard`, from their metrics.jsonl.

    python scripts/tensorboard_events.py results/fmnist_table            # every run folder below, in place
    python scripts/tensorboard_events.py results/fmnist_table --out /tmp/tb --select "bits=4,*"   # elsewhere
    tensorboard --logdir results/fmnist_table

A run folder is any folder below the given ones that holds metrics.jsonl; its events get the same tags and steps as
a run logged with `logger=tensorboard` (runtime.dashboards.TensorBoardSink). Written in place, the events go beside
the run's files and a folder that already holds event files is left alone (`--force` replaces them); with `--out`,
each run's events land in `<out>/<run folder relative to its root>`, so TensorBoard names the runs as in results/.
"""
from __future__ import annotations

import argparse
import json
import sys
from fnmatch import fnmatch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/tensorboard_events.py` from the checkout

from reports.results import read_metrics  # noqa: E402
from runtime.dashboards import TensorBoardSink, TensorBoardSpec  # noqa: E402

EVENTS_GLOB = "events.out.tfevents.*"


def run_folders(root: Path, select: str = "*") -> list[Path]:
    """Folders at or below `root` that hold metrics.jsonl and whose name matches the glob `select`."""
    return sorted(p.parent for p in root.rglob("metrics.jsonl") if fnmatch(p.parent.name, select))


def write_events(run_dir: Path, out: Path) -> int:
    """Every row of `run_dir`/metrics.jsonl as scalars in a new event file in `out`; returns the number of rows."""
    out.mkdir(parents=True, exist_ok=True)
    sink, rows = TensorBoardSink(out, TensorBoardSpec(), resume_step=-1), read_metrics(run_dir)
    try:
        for row in rows:
            sink.log({k: v for k, v in row.items() if k not in ("step", "epoch")}, row["step"])
        summary = run_dir / "summary.json"
        if summary.exists():
            sink.summary(json.loads(summary.read_text()))
    finally:
        sink.finish()
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="run folders, or folders holding them (results/<name>)")
    parser.add_argument("--out", type=Path, help="write the events here instead of into the run folders")
    parser.add_argument("--select", default="*", help="only run folders whose name matches this glob")
    parser.add_argument("--force", action="store_true", help="replace event files already in a run folder")
    args = parser.parse_args(argv)
    written = 0
    for root in args.roots:
        runs = run_folders(root, args.select)
        if not runs:
            parser.error(f"{root} holds no run folder (no metrics.jsonl) matching --select {args.select!r}")
        for run_dir in runs:
            out = run_dir if args.out is None else args.out / run_dir.relative_to(root.parent)
            old = list(out.glob(EVENTS_GLOB))
            if old and not args.force:
                print(f"{out}: has event files, left alone (--force replaces them)")
                continue
            for file in old:
                file.unlink()
            print(f"{out}: {write_events(run_dir, out)} rows")
            written += 1
    print(f"{written} run(s) written; view with: tensorboard --logdir {args.out or args.roots[0]}")


if __name__ == "__main__":
    main()
