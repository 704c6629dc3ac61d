"""`python train.py ARGS` as a process forked from one that has imported train.py already.

A bad-input case costs some 5 s as a fresh interpreter, 3.2 s of it importing torch, dynamo, timm and the project
before Hydra reads a single override; 64 such cases were a third of the suite. Here a multiprocessing forkserver
imports `train` once (no torch op has run in it, so no OpenMP thread exists to be lost in a fork) and each case is
a fork of it that runs what `python train.py` runs, `train.cli_main()` on sys.argv, in its own process, folder and
environment, with its own stdout / stderr and exit code. tests/test_bad_inputs.py runs two cases as a real
`python train.py` as well, for what happens before cli_main (the script's own imports).
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["train"])


def _run_train(args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["train.py", *args]
    import train

    train.cli_main()


def run_train(args: list[str], *, cwd: Path, env: dict[str, str],
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Like subprocess.run([python, "train.py", *args], cwd=cwd, env=env, capture_output=True, text=True)."""
    with tempfile.TemporaryDirectory() as folder:
        stdout, stderr = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        process = _CONTEXT.Process(target=_run_train, args=(args, str(cwd), env, stdout, stderr))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise TimeoutError(f"train.py {' '.join(args)} ran past {timeout} s")
        return subprocess.CompletedProcess(["train.py", *args], process.exitcode, Path(stdout).read_text(),
                                           Path(stderr).read_text())
