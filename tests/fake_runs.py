"""Fake run folders in the exact format train.py writes (results/<name>/<run_id>/{summary.json,metrics.jsonl}),
as fixtures for the tests of reports/ and scripts/ (registered in tests/conftest.py)."""
import json

import pytest

NAME = "fmnist_table"
LAYERS = ("layer1.0.conv1", "layer2.0.conv2")
QUANTIZERS = ("minmax", "lbt")
BITS = ("4/4/4", "8/8/8")
SEEDS = (0, 1)
STEPS = (0, 10, 20, 30)


def final_top1(quantizer: str, bits: str, seed: int) -> float:
    """Distinct, seed-dependent numbers so a wrong grouping or a wrong std changes the result."""
    return 80.0 + 3.0 * QUANTIZERS.index(quantizer) + 2.0 * BITS.index(bits) + 0.5 * seed + 0.1 * seed ** 2


def best_top1(final: float, seed: int) -> float:
    """The best epoch beats the last one by a seed-dependent margin, so final and best never coincide."""
    return final + 1.0 + 0.25 * seed


def write_run(root, run_id, *, quantizer, bits, seed, model, data="fashion_mnist", name=NAME, status="finished",
              error=None, top1=None, optim=None):
    """One run folder as train.py leaves it; returns its path."""
    run_dir = root / name / run_id
    run_dir.mkdir(parents=True)
    final = {} if top1 is None else {"test/top1": top1, "test/top5": 99.0, "test/loss": 0.3}
    best = {} if top1 is None else {**final, "test/top1": best_top1(top1, seed)}
    summary = {"status": status, "error": error, "name": name, "run_id": run_id, "task": "classification",
               "metric": "test/top1", "model": model, "data": data, "quantizer": quantizer,
               "bits": bits, "seed": seed, "final": final, "best": best, "epochs": 1, "steps": 40,
               "wall_time_s": 1.0, "versions": {}, "config": {"seed": seed}}
    if optim is not None:  # the trainer's `optim` label (runs from before it existed have none)
        summary["optim"] = optim
    (run_dir / "summary.json").write_text(json.dumps(summary))
    lines = []
    for i, step in enumerate(STEPS):
        line = {"step": step, "epoch": 0, "train/loss": 2.0 / (i + 1) + 0.1 * seed, "train/lr": 0.1}
        if quantizer != "fp32":
            for j, layer in enumerate(LAYERS):
                line[f"E_G/{layer}"] = 0.01 * (j + 1)
                line[f"E_GL/{layer}"] = 0.2 / (i + 1) + 0.01 * seed
                line[f"clip_frac/{layer}"] = 7e-5
                line[f"gamma/{layer}"] = 1.0 if quantizer == "minmax" else 1.0 - 0.1 * i
                line[f"g_max/{layer}"] = 3e-3
            line["grad/skipped_tensors"] = 0
        lines.append(line)
    if top1 is not None:
        lines.append({"step": STEPS[-1], "epoch": 0, **final})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run_dir / "config.yaml").write_text(f"seed: {seed}\n")
    return run_dir


def make_runs(root, model="resnet20", data="fashion_mnist"):
    """2 quantizers x 2 bit settings x 2 seeds, 2 fp32 seeds, and one failed run; returns the expected
    final top-1 per (quantizer, bits) cell."""
    expected = {}
    for q in QUANTIZERS:
        for b in BITS:
            for s in SEEDS:
                v = final_top1(q, b, s)
                expected.setdefault((q, b), []).append(v)
                write_run(root, f"bits={b[0]},quant.grad={q},seed={s}", quantizer=q, bits=b, seed=s,
                          model=model, data=data, top1=v)
    for s in SEEDS:
        v = 90.0 + s
        expected.setdefault(("fp32", "fp32"), []).append(v)
        write_run(root, f"quant=fp32,seed={s}", quantizer="fp32", bits="fp32", seed=s, model=model, data=data,
                  top1=v)
    write_run(root, "bits=4,quant.grad=lbt,seed=2", quantizer="lbt", bits="4/4/4", seed=2, model=model, data=data,
              status="failed", error="RuntimeError: loss is nan at step 12")
    return expected


@pytest.fixture
def make_fake_runs():
    """`make_runs` itself (a fixture, because `import conftest` is ambiguous across test folders)."""
    return make_runs


@pytest.fixture
def best_values():
    """The best-epoch values of a cell, from its expected final values (one per seed, in SEEDS order)."""
    return lambda finals: [best_top1(v, seed) for v, seed in zip(finals, SEEDS)]


@pytest.fixture
def write_fake_run():
    """`write_run` itself, for tests that need a run `make_runs` does not write."""
    return write_run


@pytest.fixture
def results_root(tmp_path):
    root = tmp_path / "results"
    return root, make_runs(root)
