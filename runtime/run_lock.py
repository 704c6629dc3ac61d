"""One process per run folder: a second `python train.py` with the same overrides refuses at once, writing nothing.

Two processes on one run folder (a command typed twice, a sweep relaunched while the first still runs, two SLURM
arrays with the same name) would interleave checkpoints, metrics and W&B steps. `flock` on `<run_dir>/.lock` is
released by the kernel when the process exits however it dies (SIGKILL, OOM, node reboot), so a stale lock never
needs cleaning up. The file itself stays: deleting it would let a third process lock a fresh file while the second
still holds the old one.
"""
import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runtime import atomic

LOCK_NAME = ".lock"


class RunInUseError(RuntimeError):
    """Another live process holds the run folder; the message is one line naming it and its pid."""


def _holder_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"  # empty while the holder is between flock and writing its pid


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold `run_dir` for this process; raises RunInUseError (one line) if another process holds it.

    Creates `run_dir` if needed. The holder's pid is written into the lock file after locking, for the message.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)  # 0666: the umask applies
    except OSError as err:
        raise atomic.explain_write_error(err, path) or err from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunInUseError(f"{run_dir} is in use by another process (pid {_holder_pid(fd)}); wait for it to "
                                f"finish or stop it, or choose another name=... for a separate run") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
