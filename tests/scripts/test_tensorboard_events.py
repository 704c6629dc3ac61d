"""scripts/tensorboard_events.py: a run logged without TensorBoard gets event files equal to its metrics.jsonl, once."""
import json

from scripts.tensorboard_events import main
from tests.runtime.test_dashboards import assert_same_scalars, jsonl_scalars, scalars


def test_events_from_jsonl_equal_it_and_are_not_written_twice(tmp_path, capsys):
    run_dir = tmp_path / "sweep" / "quant.grad=lbt"
    run_dir.mkdir(parents=True)
    rows = [{"step": 1, "epoch": 0, "train/loss": 2.5, "E_G/layer1": 0.1},
            {"step": 2, "epoch": 0, "test/top1": 41.0}, {"step": 3, "epoch": 1, "train/loss": 1.5, "E_G/layer1": 0.2}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "tr')
    (run_dir / "summary.json").write_text(json.dumps({"final": {"test/top1": 41.0}}))
    main([str(tmp_path / "sweep")])
    assert_same_scalars(scalars(run_dir), jsonl_scalars(run_dir))
    main([str(tmp_path / "sweep")])  # again: left alone
    assert "left alone" in capsys.readouterr().out
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "tb")])
    assert_same_scalars(scalars(tmp_path / "tb" / "sweep" / "quant.grad=lbt"), jsonl_scalars(run_dir))
    assert [s for s, _ in jsonl_scalars(run_dir)["train/loss"]] == [1, 3]  # the torn line is not a row

