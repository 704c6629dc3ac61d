"""One process per run folder: a second one refuses at once in one line, writes nothing, and a dead holder frees it."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.run_lock import LOCK_NAME, RunInUseError, run_lock

ROOT = Path(__file__).resolve().parents[2]
HOLDER = "import sys\nfrom runtime.run_lock import run_lock\nwith run_lock(sys.argv[1]):\n" \
         "    print('locked', flush=True)\n    sys.stdin.read()\n"


def snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


@pytest.fixture
def holder(tmp_path):
    """A real second process holding tmp_path/run until it is killed."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run_dir, proc
    finally:
        proc.kill()
        proc.wait()


def test_second_process_refuses_in_one_line_naming_folder_and_pid(holder):
    run_dir, proc = holder
    before = snapshot(run_dir)
    with pytest.raises(RunInUseError) as info:
        with run_lock(run_dir):
            raise AssertionError("must not get the lock")
    message = str(info.value)
    assert "\n" not in message and str(run_dir) in message and f"pid {proc.pid}" in message
    assert snapshot(run_dir) == before  # the refused process wrote nothing, not even its pid


def test_lock_is_released_when_its_holder_is_killed(holder):
    run_dir, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with run_lock(run_dir):
        assert (run_dir / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_lock_is_released_on_exit_and_refused_while_held(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(RunInUseError):  # another open file description, even in the same process
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released: taken again
        pass
