"""scripts/gpu_check.py, the one-shot CUDA check, cannot rot while no GPU is at hand: its --dry-run runs the same
code on CPU with tiny shapes (every model, every row, the exactness checks), and a failed check fails the run."""
import subprocess
import sys
from pathlib import Path

from scripts import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_builds_checks_and_times_every_model_and_row(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "result: **PASS**" in report and "FAILED" not in report
    assert "host-sync checks skipped" in proc.stderr  # CUDA only, said so
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines() if line.startswith("| ")]
    for model in gpu_check.MODELS:
        checks = {r[1]: r[2] for r in rows if r[0] == model}
        assert [checks[name] for name in ("loss of the int8 model = exact model's", "int8 = exact, layer by layer",
                                          "integer operands (W4 exact, bf16 autocast, one step)")] == ["pass"] * 3
    timed = [r for r in rows if len(r) == 9 and r[2] == "eager"]
    assert [r[0] for r in timed] == [label for label, _ in gpu_check.ROWS.values()] * len(gpu_check.MODELS)
    assert all(float(r[3]) > 0 and r[4].endswith("x") for r in timed)  # ms/step and its ratio to bf16
    assert sum(r[0] == "bf16" and r[4] == "1.00x" for r in timed) == len(gpu_check.MODELS)


def test_a_failed_check_a_failed_row_or_an_unfinished_worker_fails_the_report():
    args = gpu_check.parse_args(["--dry-run", "--models", "edsr,fcos"])
    ok_row = {"row": "bf16", "mode": "eager", "overrides": ["quant=fp32"], "first_s": 0.1, "peak_mib": 1.0}
    states = {m: gpu_check.new_state() for m in args.models}
    states["edsr"].update(status="done", ms={"bf16|eager": 5.0}, variants=[
        ok_row, {"row": "w4-lbt-int8", "mode": "eager", "overrides": [], "error": "RuntimeError: boom"}],
        checks=[{"name": "int8 = exact, layer by layer", "ok": False, "detail": "AssertionError: output 0"}])
    states["fcos"]["status"] = "stopped at the time budget (--budget-s)"
    text, failed = gpu_check.report(args, states, 1.0)
    assert failed == ["edsr: int8 = exact, layer by layer: AssertionError: output 0",
                      "edsr: W4A4G4 lbt int8, eager: RuntimeError: boom",
                      "fcos: stopped at the time budget (--budget-s)"]
    assert "result: **FAIL**" in text and "| FAILED: RuntimeError: boom |" in text and "| **FAIL** |" in text


def test_a_sync_is_allowed_only_where_torchvision_detection_code_made_it():
    """As an H200 run reported them: the innermost frames decide (torchvision's own code may sync), not the
    trainer's frame that called it."""
    from traceback import FrameSummary

    from scripts.gpu_check_worker import _sync_site, sync_check

    def site(*frames):  # repository files as ROOT/..., library files under a site-packages
        return _sync_site([FrameSummary(f"{ROOT}/{path[5:]}" if path.startswith("repo/") else
                                        f"/env/lib/python3.12/site-packages/{path}", line, name)
                           for path, line, name in frames])

    tv = site(("repo/tasks/detection.py", 45, "loss"), ("torchvision/models/detection/fcos.py", 604, "forward"),
              ("torchvision/models/detection/transform.py", 167, "normalize"))
    giou = site(("repo/tasks/detection.py", 45, "loss"), ("torchvision/ops/giou_loss.py", 47, "giou"),
                ("torchvision/ops/_utils.py", 103, "_loss_inter_union"))
    ours = site(("repo/train.py", 80, "step"), ("repo/quant/gradient.py", 12, "backward"))
    assert tv == f"{ROOT}/tasks/detection.py:45 (via torchvision/models/detection/transform.py:167 normalize " \
                 "< torchvision/models/detection/fcos.py:604 forward)"
    assert sync_check({"syncs": {tv: 16, giou: 5}}) == (True, "no sync outside torchvision's detection code "
                                                                 "(21 there: FCOS's loss)")
    passed, detail = sync_check({"syncs": {tv: 16, ours: 1}})
    assert not passed and detail.startswith(f"1 sync(s): {ROOT}/quant/gradient.py:12 (via gradient.py:12")
