"""The code's shape stays readable (issue 26's bars): small files, a short trainer, a short README that starts with
the two set-up commands, and a trainer that reaches the quantizers only through the run it assembles."""
import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Benchmarks and the GPU check are long on purpose: one self-contained script per measurement.
LONG_ALLOWED = ("scripts/bench_", "scripts/gpu_check")


def tracked_python_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.split() if not p.startswith("tests/")]


def line_count(path: str) -> int:
    return len((ROOT / path).read_text().splitlines())


def test_no_source_file_is_over_300_lines_except_benchmarks():
    long = {p: line_count(p) for p in tracked_python_files() if not p.startswith(LONG_ALLOWED)}
    assert {p: n for p, n in long.items() if n > 300} == {}


def test_the_trainer_is_at_most_250_lines_with_no_function_over_60():
    assert line_count("train.py") <= 250
    tree = ast.parse((ROOT / "train.py").read_text())
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    assert {name: n for name, n in lengths.items() if n > 60} == {}


def test_the_trainer_imports_nothing_from_quant():
    tree = ast.parse((ROOT / "train.py").read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and m.split(".")[0] == "quant"]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    commands = [line.split("#")[0].strip() for line in lines[:8] if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
