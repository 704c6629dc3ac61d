"""Results and checkpoints are written atomically, survive truncation and full disks, and restore the RNG stream."""
import errno
import io
import json
import logging
import os
import stat

import pytest
import torch

from runtime import atomic, checkpoint


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    atomic.write_json(path, {"status": "finished"})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic.write_json(path, {"bad": Boom()})
    assert json.loads(path.read_text()) == {"status": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_checkpoint_restores_rng_stream(tmp_path):
    torch.manual_seed(3)
    checkpoint.save(tmp_path, epoch=2)
    expected = torch.rand(5)
    state = checkpoint.load(tmp_path)
    assert state["epoch"] == 2
    checkpoint.set_rng_state(state["rng"])
    assert torch.equal(torch.rand(5), expected)
    assert checkpoint.load(tmp_path / "missing") is None


# -- checkpoints survive truncation ---------------------------------------------------------------------------


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_save_keeps_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, epoch=1)
    assert not (tmp_path / checkpoint.PREVIOUS_NAME).exists()
    checkpoint.save(tmp_path, epoch=2)
    checkpoint.save(tmp_path, epoch=3)
    assert torch.load(tmp_path / checkpoint.PREVIOUS_NAME, weights_only=False)["epoch"] == 2
    assert checkpoint.load(tmp_path)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.PREVIOUS_NAME, checkpoint.CHECKPOINT_NAME]


def test_a_readable_checkpoint_exists_at_every_step_of_a_save(tmp_path, monkeypatch):
    """Between any two renames of a save, `load` still finds a complete checkpoint (never a moment with neither)."""
    checkpoint.save(tmp_path, epoch=1)
    checkpoint.save(tmp_path, epoch=2)
    real_replace, seen = os.replace, []

    def checked_replace(src, dst):
        seen.append(checkpoint.load(tmp_path)["epoch"])
        real_replace(src, dst)
        seen.append(checkpoint.load(tmp_path)["epoch"])

    monkeypatch.setattr(atomic.os, "replace", checked_replace)
    checkpoint.save(tmp_path, epoch=3)
    monkeypatch.undo()
    assert seen and set(seen) <= {2, 3} and seen[-1] == 3


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    checkpoint.save(tmp_path, epoch=1)
    checkpoint.save(tmp_path, epoch=2)
    newest = tmp_path / checkpoint.CHECKPOINT_NAME
    {"truncated": lambda: truncate(newest), "empty": lambda: newest.write_bytes(b""),
     "garbage": lambda: newest.write_bytes(b"not a checkpoint" * 10)}[damage]()
    with caplog.at_level(logging.WARNING, logger="runtime.checkpoint"):
        assert checkpoint.load(tmp_path)["epoch"] == 1
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and str(newest) in record.getMessage()


def test_missing_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    checkpoint.save(tmp_path, epoch=1)
    checkpoint.save(tmp_path, epoch=2)
    (tmp_path / checkpoint.CHECKPOINT_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="runtime.checkpoint"):
        assert checkpoint.load(tmp_path)["epoch"] == 1
    assert "missing" in caplog.records[0].getMessage()


def test_both_checkpoints_truncated_is_one_line_naming_both_files(tmp_path):
    checkpoint.save(tmp_path, epoch=1)
    checkpoint.save(tmp_path, epoch=2)
    newest, previous = tmp_path / checkpoint.CHECKPOINT_NAME, tmp_path / checkpoint.PREVIOUS_NAME
    truncate(newest)
    truncate(previous, keep=0.1)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(newest) in message and str(previous) in message and "delete" in message


def test_single_truncated_checkpoint_says_to_delete_it(tmp_path):
    checkpoint.save(tmp_path, epoch=1)
    truncate(tmp_path / checkpoint.CHECKPOINT_NAME)
    with pytest.raises(checkpoint.CheckpointError, match="delete it to start this run over") as info:
        checkpoint.load(tmp_path)
    assert "\n" not in str(info.value)


# -- full disks, read-only folders, file modes ----------------------------------------------------------------


def raise_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_text_is_one_line_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic.write_json(path, {"status": "running"})
    monkeypatch.setattr(atomic.os, "fsync", raise_enospc)  # where a full disk shows up for buffered writes
    with pytest.raises(OSError) as info:
        atomic.write_json(path, {"status": "finished"})
    assert str(info.value) == f"No space left on device (while writing {path})"
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


class FullDisk(io.RawIOBase):
    """A file whose third write finds the disk full, as torch.save's zip writer sees it."""

    def __init__(self, fd, *args, **kwargs):
        os.close(fd)
        self.writes = 0

    def writable(self):
        return True

    def write(self, data):
        self.writes += 1
        if self.writes > 2:
            raise_enospc()
        return len(data)

    def fileno(self):
        raise AssertionError("never reached: the write fails first")


def test_disk_full_inside_torch_save_is_not_torchs_cryptic_message(tmp_path, monkeypatch):
    """torch.save reports a failed write as "[enforce fail at inline_container.cc] unexpected pos"; we name the file."""
    checkpoint.save(tmp_path, epoch=1)
    checkpoint.save(tmp_path, epoch=2)
    monkeypatch.setattr(atomic.os, "fdopen", FullDisk)
    with pytest.raises(OSError) as info:
        checkpoint.save(tmp_path, epoch=3, model={"w": torch.zeros(1000)})
    monkeypatch.undo()
    assert str(info.value) == f"No space left on device (while writing {tmp_path / checkpoint.CHECKPOINT_NAME})"
    assert checkpoint.load(tmp_path)["epoch"] == 2  # both files as they were, no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.PREVIOUS_NAME, checkpoint.CHECKPOINT_NAME]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EPERM])
def test_read_only_run_folder_is_one_line_naming_the_folder(tmp_path, monkeypatch, code):
    """Faked with the errno the kernel returns: the tests run as root, whom chmod does not stop."""
    run_dir = tmp_path / "results" / "default" / "bits=4"
    real_open = os.open

    def read_only_open(path, flags, mode=0o777, **kwargs):
        if str(path).startswith(str(run_dir)) and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(atomic.os, "open", read_only_open)
    with pytest.raises(OSError) as info:
        atomic.write_json(run_dir / "summary.json", {})
    monkeypatch.undo()
    message = str(info.value)
    assert "\n" not in message and str(run_dir) in message and info.value.errno == code
    assert "results_dir=" in message


def test_unwritable_results_folder_names_the_folder_that_exists(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()

    def read_only_mkdir(path, mode=0o777):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    with pytest.raises(PermissionError) as info:
        atomic.write_text(results / "default" / "run" / "config.yaml", "")
    monkeypatch.undo()
    assert f"in {results}:" in str(info.value)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_get_the_process_umask_not_0600(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "config.yaml", "a: 1\n")
        atomic.write_json(tmp_path / "summary.json", {})
        checkpoint.save(tmp_path, epoch=1)
        checkpoint.save(tmp_path, epoch=2)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["config.yaml", "summary.json", "checkpoint.pt", "checkpoint.prev.pt"], mode)
