"""Evaluate a trained run again: its last or best checkpoint, on its test data or on other data.

    python eval.py run=results/demo/default                     # the last checkpoint: the summary's final metrics
    python eval.py run=results/demo/default ckpt=best           # best.pt: the summary's best metrics
    python eval.py run=results/demo/default data.root=/other/fashion-mnist quant.kernel=exact   # dotted overrides

The run's stored `config.yaml` is the config; `key=value` overrides with dotted keys change it (data paths, batch
sizes, the kernel, the device). The metrics are printed and written atomically to `<run>/eval_<ckpt>.json`. A
folder without the checkpoint, or a checkpoint that does not fit the configured model, is one line and exit 2.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from assemble import ConfigError, Run, assemble, read_specs
from runtime import atomic, checkpoint, distributed

log = logging.getLogger("eval")
CHECKPOINTS = {"last": checkpoint.CHECKPOINT_NAME, "best": checkpoint.BEST_NAME}


def _arguments(argv: list[str]) -> tuple[Path, str, list[str]]:
    """(run folder, "last" | "best", dotted overrides) from `run=... ckpt=... key=value ...`."""
    run, ckpt, overrides = None, "last", []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"{arg!r} is not key=value: use run=<run folder> [ckpt=best|last] [dotted.key=value]")
        if key == "run":
            run = Path(value)
        elif key == "ckpt":
            ckpt = value
        else:
            overrides.append(arg)
    if run is None:
        raise ConfigError("no run given: use run=<run folder> (results/<name>/<run_id>)")
    if ckpt not in CHECKPOINTS:
        raise ConfigError(f"ckpt={ckpt} is invalid: use one of {', '.join(CHECKPOINTS)}")
    return run, ckpt, overrides


def _config(run_dir: Path, overrides: list[str]):
    """The run's stored config with the overrides merged in; the model is built bare (its weights come from the
    checkpoint), uncompiled, without dashboards."""
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        raise ConfigError(f"{run_dir} has no config.yaml: use a run folder written by train.py")
    cfg = OmegaConf.load(stored)
    for item in overrides:
        key = item.partition("=")[0]
        if "." not in key and OmegaConf.is_dict(cfg.get(key)):
            raise ConfigError(f"{item}: eval.py changes the stored config with dotted keys ({key}.root=...), not "
                              f"config groups")
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            raise ConfigError(f"{item}: the run's config has no key {key}")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    with open_dict(cfg):
        cfg.model.init_from, cfg.compile, cfg.logger, cfg.progress = None, False, {}, False
    return cfg


def load_run(run_dir: Path, ckpt: str, overrides: list[str]) -> tuple[Run, dict, Path]:
    """(the run assembled from its stored config plus `overrides`, with the checkpoint's model loaded and in eval
    mode; the checkpoint; its file). ConfigError: no such checkpoint, or one that does not fit the model."""
    file = run_dir / CHECKPOINTS[ckpt]
    if not file.is_file():
        why = "train until an epoch ends" if ckpt == "last" else \
            "it is written when an epoch improves the test metric (runs from before best.pt have none)"
        raise ConfigError(f"{run_dir} has no {file.name}: {why}")
    cfg = _config(run_dir, overrides)
    specs = read_specs(cfg)
    state = torch.load(file, map_location="cpu", weights_only=False)
    run = assemble(cfg, specs, distributed.setup(specs.run.device))
    try:
        missing, unexpected = run.model.load_state_dict(state["model"], strict=False)
    except RuntimeError as e:  # other shapes
        raise ConfigError(f"{file} does not fit the configured {type(run.model).__name__}: "
                          f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    if missing or unexpected:
        raise ConfigError(f"{file} does not fit the configured {type(run.model).__name__}: "
                          f"missing {missing[:3]} ({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
    run.model.eval()
    return run, state, file


def evaluate_run(run_dir: str | Path, ckpt: str = "last", overrides: list[str] | None = None) -> dict:
    """The test metrics of `run_dir`'s checkpoint `ckpt` under its stored config (plus `overrides`), written to
    `<run_dir>/eval_<ckpt>.json`; the returned dict is what that file holds."""
    run_dir, overrides = Path(run_dir), list(overrides or [])
    run, state, file = load_run(run_dir, ckpt, overrides)
    metrics = {f"test/{k}": v for k, v in run.evaluate().items()}  # as the trainer evaluates (autocast included)
    result = {"run": str(run_dir), "checkpoint": file.name, "epoch": state.get("epoch"), "overrides": overrides,
              "metrics": metrics, "written": str(run_dir / f"eval_{ckpt}.json")}
    atomic.write_json(Path(result["written"]), result)
    return result


def cli_main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        result = evaluate_run(*_arguments(sys.argv[1:] if argv is None else argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result["metrics"], indent=1))
    print(f"-> {result['written']}")


if __name__ == "__main__":
    cli_main()
