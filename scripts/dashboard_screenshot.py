"""A picture of the TensorBoard dashboard comparing gradient quantizers, taken in headless Chromium.

    python scripts/dashboard_screenshot.py                      # -> docs/dashboard.png, from results/fmnist_table
    python scripts/dashboard_screenshot.py --runs results/fmnist_table --select "bits=4,*seed=0" \
        --tags "E_GL/layer3.2.conv2|test/top1" --out docs/dashboard.png

Writes event files for the selected committed runs (scripts/tensorboard_events.py) into a temporary folder, serves
them with `tensorboard`, opens its scalars dashboard filtered to `--tags` in Chromium (Debian's `chromium` package;
`--chromium` for another binary) and saves the page as a PNG. Needs no network: TensorBoard serves on localhost.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python scripts/dashboard_screenshot.py` from the checkout

from scripts.tensorboard_events import run_folders, write_events  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"tensorboard exited with status {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"tensorboard did not serve {url} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "fmnist_table")
    parser.add_argument("--select", default="bits=4,*seed=0", help="glob over run folder names")
    parser.add_argument("--tags", default="E_GL/layer3.2.conv2|E_G/layer3.2.conv2|test/top1",
                        help="TensorBoard's tag filter (a regular expression)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--size", default="1600,1000", help="window width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time the page gets to draw its charts")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("no chromium on PATH: `apt-get install chromium` (Debian) or pass --chromium=<binary>")
    runs = run_folders(args.runs, args.select)
    if not runs:
        parser.error(f"{args.runs} holds no run folder matching --select {args.select!r}")
    with tempfile.TemporaryDirectory() as logdir:
        for run_dir in runs:  # TensorBoard names each run by its folder: the run id, which says the quantizer
            write_events(run_dir, Path(logdir) / run_dir.name)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", str(port),
                                   "--host", "127.0.0.1", "--reload_interval", "0"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_served(f"http://127.0.0.1:{port}/", server)
            page = (f"http://127.0.0.1:{port}/?darkMode=false#scalars&_smoothingWeight=0"
                    f"&tagFilter={urllib.parse.quote(args.tags, safe='')}")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                f"--user-data-dir={profile}", f"--window-size={args.size}",
                                f"--virtual-time-budget={args.wait_ms}", f"--screenshot={args.out}", page],
                               check=True, capture_output=True, timeout=180)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{len(runs)} runs ({', '.join(r.name for r in runs)}) -> {args.out}")


if __name__ == "__main__":
    main()
