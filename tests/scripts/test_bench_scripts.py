"""The benchmark scripts run as the README and the result files quote them (python scripts/bench_*.py ...), on tiny
eager settings: a config override or an import that rots fails here, not in a user's hands. Timings are not
checked (they belong in the reports, not in tests); the rows and the ratio columns are."""
import os
import re
import subprocess
import sys
from pathlib import Path

from quant.kernel_rule import int8_refusal

ROOT = Path(__file__).resolve().parents[2]
# `python scripts/x.py` puts scripts/ first on sys.path, not the checkout: without this, `import assemble` would find
# whichever checkout the venv's editable install points to (e.g. another git worktree), not the one under test
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_bench(script: str, *args: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, f"scripts/{script}", *args, "--out", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text()


def table_rows(report: str) -> list[list[str]]:
    """The cells of every Markdown table row that is not a header or a separator."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines() if line.startswith("|")]
    headers = ("config", "layer", "B x C x H x W, stride", "optim", "variant")
    return [r for r in rows if not set("".join(r)) <= set("-:") and r[0] not in headers]


def ratio(cell: str) -> float:
    match = re.fullmatch(r"([0-9.]+)x", cell)
    assert match, cell
    return float(match.group(1))


def test_bench_apt_times_every_row_against_fixed_point(tmp_path):
    report = run_bench("bench_apt.py", "--modes", "eager", "--batch-size", "4", "--steps-per-epoch", "4",
                       "--promote-steps", "4", "--rounds", "1", "--steps", "4", out=tmp_path / "apt.md")
    rows = {r[0]: r for r in table_rows(report)}
    assert set(rows) == {"fixed 8/8/8", "apt8", "apt8-24", "apt8-24, shift every step"}
    assert ratio(rows["fixed 8/8/8"][3]) == 1.0
    assert all(ratio(r[3]) > 0 for r in rows.values())
    assert rows["apt8"][7] == "W 8.0 A 8.0 G 8.0"  # pinned at 8 bits: nothing can move


def test_bench_step_reports_fp32_and_the_quantized_rows_with_a_split(tmp_path):
    report = run_bench("bench_step.py", "--models", "resnet20", "--batch-size", "4", "--bits", "4",
                       "--policies", "minmax", "--kernel", "int8", "--modes", "eager", "--warmup", "1",
                       "--rounds", "1", "--steps", "1", "--split", "--conv-rules", "16/16/64,16/64,64/64",
                       out=tmp_path / "step.md")
    rows = table_rows(report)
    quantized = [f"W4A4G4 minmax, conv int8 fwd >= {f}, dX >= {d}, dW >= 64" for f, d in [(16, 16), (16, 64), (64, 64)]]
    assert [r[:2] for r in rows if r[1] == "eager"] == [["FP32", "eager"]] + [[q, "eager"] for q in quantized]
    assert ratio(rows[0][3]) == 1.0
    split = [r for r in rows if r[1].replace(".", "").isdigit()]  # config | step | GEMM | im2col | quantize | rest
    assert [r[0] for r in split] == ["FP32"] + quantized
    # each rule's layer counts: ResNet-20's 13 narrow 3x3 convolutions are int8 but for dL/dW under 16/16/64,
    # int8 in the forward only under 16/64 (= 16/64/64), exact under 64/64
    if int8_refusal():  # a CPU without VNNI runs every layer exact (quant.kernel_rule)
        assert "(conv rule 16/64/64): 0 layers int8, 0 int8-fwd-dx (dW exact), 0 int8-forward (backward exact), " \
            "18 exact" in report
    else:
        assert "(conv rule 16/16/64): 5 layers int8, 13 int8-fwd-dx (dW exact), 0 int8-forward" in report
        assert "(conv rule 16/64/64): 5 layers int8, 0 int8-fwd-dx (dW exact), 13 int8-forward (backward exact), " \
            "0 exact" in report
        assert "(conv rule 64/64/64): 5 layers int8, 0 int8-fwd-dx (dW exact), 0 int8-forward (backward exact), " \
            "13 exact" in report


def test_bench_step_times_each_policy_and_a_float_format_relative_to_min_max(tmp_path):
    report = run_bench("bench_step.py", "--models", "resnet20", "--batch-size", "4", "--bits", "8",
                       "--policies", "minmax,psq,minmax+fp8_e5m2", "--modes", "eager", "--warmup", "1",
                       "--rounds", "1", "--steps", "1", out=tmp_path / "step.md")
    rows = {r[0]: r for r in table_rows(report) if r[1] == "eager"}
    assert set(rows) == {"FP32", "W8A8G8 minmax", "W8A8G8 psq", "W8A8G8 minmax+fp8_e5m2"}
    assert rows["FP32"][5] == "" and ratio(rows["W8A8G8 minmax"][5]) == 1.0
    assert ratio(rows["W8A8G8 psq"][5]) > 0 and ratio(rows["W8A8G8 minmax+fp8_e5m2"][5]) > 0


def test_bench_step_rejects_a_malformed_conv_rule():
    proc = subprocess.run([sys.executable, "scripts/bench_step.py", "--conv-rules", "16"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--conv-rules" in proc.stderr and "16/64" in proc.stderr


def test_bench_int8_times_the_convolution_lowerings(tmp_path):
    report = run_bench("bench_int8.py", "--convs", "--no-steps", "--rounds", "1", "--warmup", "1",
                       out=tmp_path / "int8.md")
    rows = table_rows(report)
    assert rows and all(len(r) == 10 for r in rows)  # shape, pixels, 3 fp32 ops, 2 direct, 3 im2col
    assert all(float(c) > 0 for r in rows for c in r[2:])


def test_bench_trs_compares_each_trs_optimizer_with_its_base(tmp_path):
    report = run_bench("bench_trs.py", "--batch-size", "2", "--optims", "sgd,sgdt", "--warmup", "0", "--rounds", "1",
                       "--steps", "1", out=tmp_path / "trs.md")  # always compiled: the slowest of these tests
    rows = {r[0]: r for r in table_rows(report)}
    assert set(rows) == {"sgd", "sgdt"}
    assert rows["sgd"][2] == "1 (base)" and ratio(rows["sgdt"][2]) > 0


def test_bench_ddp_times_the_step_with_and_without_the_reduction(tmp_path):
    report = run_bench("bench_ddp.py", "--batch-size", "2", "--warmup", "0", "--rounds", "1", "--steps", "1",
                       out=tmp_path / "ddp.md")  # 2 gloo ranks
    rows = table_rows(report)
    assert [r[0] for r in rows] == ["DDP, gamma updated per rank (no reduction)",
                                    "DDP + one packed all-reduce of the quantizer statistics"]
    assert ratio(rows[0][2]) == 1.0 and ratio(rows[1][2]) > 0
