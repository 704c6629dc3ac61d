"""Atomic writes: a reader (or a crash) never sees a half-written file.

Write to a temporary file in the same folder, fsync, then `os.replace` (atomic on POSIX and Windows).

The temporary file is created with mode 0o666 and O_EXCL, so the kernel applies the process umask (and a folder's
default ACL) exactly as for any new file: 0644 under umask 022, 0664 under 002. `tempfile.mkstemp` would make every
result 0600, which breaks results folders shared by a group.

A full disk or an unwritable folder is reported as one line naming the file or folder, instead of torch's
"[enforce fail at inline_container.cc:672] . unexpected pos 46 vs 0" or a bare "[Errno 13] Permission denied".
"""
import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
WRITE_ERRNOS = _NO_SPACE + _NOT_WRITABLE  # the errors explain_write_error turns into one line


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err` and the exceptions behind it (torch.save turns a failed `write` into a RuntimeError with it as context)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def explain_write_error(err: BaseException, path: Path) -> OSError | None:
    """A one-line OSError for a full disk or an unwritable folder somewhere behind `err`, or None for anything else.

    The result keeps the original errno, so callers can still tell the cases apart.
    """
    for cause in _causes(err):
        if not isinstance(cause, OSError):
            continue
        if cause.errno in _NO_SPACE:
            explained = OSError(f"{os.strerror(cause.errno)} (while writing {path})")
        elif cause.errno in _NOT_WRITABLE:
            folder = _nearest_existing(Path(path).parent)  # if a folder could not be created, its parent is to blame
            kind = PermissionError if cause.errno != errno.EROFS else OSError
            explained = kind(f"cannot write {Path(path).name} in {folder}: {os.strerror(cause.errno)}; "
                             f"make the folder writable or choose another results_dir=...")
        else:
            continue
        explained.errno = cause.errno  # set after construction: str() stays the message alone, without "[Errno N]"
        return explained
    return None


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 2^32 names: a clash is a leftover of a killed writer, try another
            continue


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut after os.replace must not bring back the old name)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _link_over(src: Path, dst: Path) -> None:
    """Make `dst` another name of `src`'s file, atomically: `dst` is always either its old or its new content."""
    link = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.tmp"
    try:
        os.link(src, link)
    except OSError:  # no hard links here (some network/FUSE file systems): move instead; `dst` is never missing
        os.replace(src, dst)
        return
    os.replace(link, dst)


def _atomic(path: Path, write: Callable[[Any], None], mode: str, previous: Path | None = None) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent, path.name)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            _link_over(path, Path(previous))
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except BaseException as err:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        explained = explain_write_error(err, path) if isinstance(err, Exception) else None
        if explained is not None:
            raise explained from err
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def torch_save(path: Path, obj: Any, *, previous: Path | None = None) -> None:
    """`torch.save` atomically; with `previous`, the file now at `path` becomes `previous` (also atomically) first.

    Order: new data fsynced in a temporary file -> old file hard-linked over `previous` -> temporary renamed over
    `path`. At every moment `path` or `previous` holds a complete file; in between, both hold the old one.
    """
    import torch  # here, not at the top: the results tools write tables and PNGs without loading torch

    _atomic(path, lambda f: torch.save(obj, f), "wb", previous=previous)
