"""Results and checkpoints are written atomically and restore the exact RNG stream."""
import json

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
