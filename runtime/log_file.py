"""The run folder's `train.log`: created on the first record, never a crash when the folder cannot be written.

Hydra's default FileHandler opens `train.log` as the job starts, so a command rejected for a bad value still leaves
a file behind, and a read-only results folder (even a finished run that only needs skipping) fails with a logging
traceback. This handler opens lazily and, if the file cannot be opened, says so once on stderr and drops file
logging; the console keeps every record.
"""
import logging
import sys


class RunLogFileHandler(logging.FileHandler):
    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None) -> None:
        super().__init__(filename, mode=mode, encoding=encoding, delay=True)
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._failed:
            return
        if self.stream is None:
            try:
                self.stream = self._open()
            except OSError as e:
                self._failed = True
                print(f"warning: not logging to {self.baseFilename}: {e.strerror}", file=sys.stderr)
                return
        super().emit(record)
