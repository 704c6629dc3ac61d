"""Reading run folders: the one place that knows the run-folder contract.

The trainer (train.py) writes every run to `results/<name>/<run_id>/` with `config.yaml`, `metrics.jsonl`
(one JSON object per logging step / evaluation) and `summary.json` (status, error, the labels of what was run
from `runtime.run_info.run_labels`, final and best metrics). The trainer's resume check, the table builder
(`reports.results_table`), the sweep callback (`reports.sweep_summary`) and the command-line tools
(`scripts/table.py`, `scripts/plot.py`) all read runs through this module, so a change to the contract is made
here once.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.cli import ADDED_KEY_DEFAULTS, PATH_KEYS, SAME_FOLDER_KEYS

#: the label the trainer writes for full precision, both as `quantizer` and as `bits`
FULL_PRECISION = "fp32"
SUMMARY = "summary.json"
#: `optim` labels that do not mark a row: SGD with its schedules, the optimizer every paper table starts from
PLAIN_OPTIMIZERS = ("sgd", "sgd_multistep")
#: config keys that do not change what a run computes: those that place or do not name the run folder
#: (runtime.cli.PATH_KEYS, SAME_FOLDER_KEYS), with the whole logger node. Two runs of one seed whose configs differ only
#: here are the same training run twice (`result_config`).
NON_RESULT_KEYS = (*PATH_KEYS, "logger", *(k for k in SAME_FOLDER_KEYS if not k.startswith(("logger.", "hydra."))))


class ResultsError(ValueError):
    """A user-facing problem with the results folder or an argument; the message is one line."""


def _parse_summary(path: Path) -> dict:
    """The summary as a dict; raises OSError / ValueError (with the reason) when it cannot be read."""
    summary = json.loads(path.read_text())  # JSONDecodeError is a ValueError
    if not isinstance(summary, dict):
        raise ValueError(f"top level is {type(summary).__name__}, not an object")
    return summary


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    """The run's summary.json, or None when it is missing or unreadable (torn by a kill, not JSON, not an object).

    Never raises for a bad file: a run whose summary cannot be read is treated as not there, so the trainer
    runs it again and reports list it as unreadable instead of stopping with a traceback.
    """
    try:
        return _parse_summary(Path(run_dir) / SUMMARY)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run as read from its `summary.json`.

    `quantizer` is the display label (see `quantizer_label`). `status` is "unreadable" when summary.json could
    not be parsed. `final` holds the metrics after the last epoch, `best` those of the epoch with the best
    primary metric (what the official LBT code reports).
    """

    path: Path
    status: str
    error: str | None = None
    name: str = "?"
    run_id: str = "?"
    task: str = "?"
    metric: str = "?"
    model: str = "?"
    data: str = "?"
    quantizer: str = "?"
    bits: str = "?"
    optim: str = "sgd"  # the `optim` config choice; runs from before the label existed trained with SGD
    seed: int | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    config_key: str = ""  # `result_config` of the summary's config: equal for reruns of one training run
    written_at: float = 0.0  # when a finished run wrote summary.json last: its finished_at, else the file's mtime

    def value(self, which: str = "final") -> float | None:
        """The `which` ("final" or "best") primary metric, or None when the run has none (failed, no eval)."""
        v = (self.final if which == "final" else self.best).get(self.metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    @property
    def counts(self) -> bool:
        """Whether this run contributes to tables and accuracy plots."""
        return self.status == "finished" and self.value("final") is not None

    @property
    def why_excluded(self) -> str:
        """One line saying why a run is not counted ("" if it is)."""
        if self.counts:
            return ""
        if self.status == "finished":
            return f"finished without a final {self.metric!r}"
        return f"{self.status}: {self.error}" if self.error else self.status


def metric_label(metric: str) -> str:
    """Column label of a metric key: "test/top1" -> "top1"."""
    return metric.rsplit("/", 1)[-1]


def bits_sort_key(bits: str) -> tuple:
    """Numeric order of W/A/G bit settings ("4/4/4" < "5/5/5" < "8/8/8" < "8/8/32"); full precision first."""
    if bits == FULL_PRECISION:
        return (0, ())
    try:
        return (1, tuple(int(b) for b in bits.split("/")))
    except ValueError:  # not W/A/G numbers: keep it, after the numeric ones
        return (2, (bits,))


def bits_slug(bits: str) -> str:
    """File-name form of a bit setting: "4/4/4" -> "w4a4g4" (the reference CSV's column names)."""
    parts = bits.split("/")
    if len(parts) == 3:
        return "".join(f"{role}{b}" for role, b in zip("wag", parts))
    return bits.replace("/", "-")


def quantizer_label(summary: dict) -> str:
    """Display name of a run's gradient interval policy: the trainer's label (the `quant/grad` choice, or
    "fp32"), except that a fixed-ratio run carries its clipping ratio ("fixed gamma=0.8"), because the paper
    reports gamma=0.8 and 0.6 as different methods (Kim et al. ECCV 2024, Table 1). A run trained with another
    optimizer than SGD (the trainer's `optim` label: adamw, sgdt, adamt, ...) carries its name too ("lbt sgdt"),
    so SGD, SGDT, AdamW and AdamT runs land in different rows; SGD (any schedule) stays unmarked."""
    quantizer = str(summary.get("quantizer", "?"))
    if quantizer == "fixed":
        # the ratio lives in the gradient-quantizer config, `quant.grad.gamma` (docs/methods.md §1.3)
        grad_cfg = ((summary.get("config") or {}).get("quant") or {}).get("grad") or {}
        gamma = grad_cfg.get("gamma") if isinstance(grad_cfg, dict) else None
        if isinstance(gamma, (int, float)):
            quantizer = f"fixed gamma={gamma:g}"
    optimizer = summary.get("optim")
    if optimizer and optimizer not in PLAIN_OPTIMIZERS:
        quantizer = f"{quantizer} {optimizer}"
    return quantizer


def search_label(summary: dict) -> str | None:
    """The architecture search a run did ("nce"), or None for plain training.

    A search run trains a supernet on part of the training split while it picks widths, so its metric is not the
    plain model's and must never share a cell with it. `config.search` (null unless `search=...`) names it by its
    `_target_` module (search.nce.NceSearch -> "nce"); a summary without a config is known by the `nce` entry that
    search.nce.NceSearch.finish() adds.
    """
    config = summary.get("config")
    search = config.get("search") if isinstance(config, dict) else None
    if isinstance(search, dict) and search.get("_target_"):
        return str(search["_target_"]).split(".")[-2]
    return "nce" if isinstance(summary.get("nce"), dict) else None


def model_label(summary: dict) -> str:
    """Display name of a run's model: the trainer's label, plus "search=nce" for a search run ("resnet20
    search=nce"), so search runs get their own rows (and no paper numbers: they did not train the paper's model)."""
    model = str(summary.get("model", "?"))
    search = search_label(summary)
    return f"{model} search={search}" if search else model


def _with_data_root(node: Any, data_root: str) -> Any:
    """`node` with every string that starts with the data root written as "${data_root}/...", and without null
    entries (a key absent from an older run's config and null in a newer one is the same setting: resume_guard)."""
    if isinstance(node, dict):
        return {k: _with_data_root(v, data_root) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_with_data_root(v, data_root) for v in node]
    if isinstance(node, str) and data_root and (node == data_root or node.startswith(data_root.rstrip("/") + "/")):
        return "${data_root}" + node[len(data_root):]
    return node


def result_config(config: Any) -> str:
    """The part of a resolved config that decides a run's result, as canonical JSON: two runs of one seed with equal
    strings are reruns of one training run, whatever their folders, devices or sweeps (NON_RESULT_KEYS dropped; the
    data root, which the data configs copy into their paths, written as "${data_root}")."""
    if not isinstance(config, dict):
        return json.dumps(config, sort_keys=True, default=str)
    data_root = config.get("data_root")
    config = _with_data_root(config, data_root if isinstance(data_root, str) else "")  # also a copy to drop keys from
    for key in (*NON_RESULT_KEYS, *ADDED_KEY_DEFAULTS):  # the latter only where they hold what their absence meant
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and (key not in ADDED_KEY_DEFAULTS or node.get(leaf) == ADDED_KEY_DEFAULTS[key]):
            node.pop(leaf, None)
    return json.dumps(config, sort_keys=True, default=str)


def load_run(run_dir: Path) -> RunRecord:
    """One run folder as a record; an unreadable summary.json becomes an "unreadable" record saying why."""
    try:
        s = _parse_summary(run_dir / SUMMARY)
        written_at = s.get("finished_at")  # Unix time; copies (git clone, rsync) keep it, unlike the file's mtime
        if isinstance(written_at, bool) or not isinstance(written_at, (int, float)):
            written_at = (run_dir / SUMMARY).stat().st_mtime  # summaries written before finished_at existed
    except (OSError, ValueError) as err:
        return RunRecord(path=run_dir, status="unreadable", error=f"{type(err).__name__}: {err}",
                         name=run_dir.parent.name, run_id=run_dir.name)
    seed = s.get("seed")
    return RunRecord(
        path=run_dir,
        status=str(s.get("status", "running")),
        error=s.get("error"),
        name=str(s.get("name", run_dir.parent.name)),
        run_id=str(s.get("run_id", run_dir.name)),
        task=str(s.get("task", "?")),
        metric=str(s.get("metric", "?")),
        model=model_label(s),
        data=str(s.get("data", "?")),
        quantizer=quantizer_label(s),
        bits=str(s.get("bits", "?")),
        optim=str(s.get("optim") or "sgd"),
        seed=seed if isinstance(seed, int) else None,
        final=dict(s.get("final") or {}),
        best=dict(s.get("best") or {}),
        config_key=result_config(s.get("config")),
        written_at=written_at,
    )


def load_runs(root: str | os.PathLike, *, name: str | None = None, task: str | None = None,
              pattern: str = f"**/{SUMMARY}") -> list[RunRecord]:
    """All runs under `root` whose summary matches the filters, sorted by path (deterministic output).

    Raises ResultsError (one line) when `root` is not a folder or the filters leave nothing.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"results folder {str(root)!r} does not exist; pass --root with the folder "
                           f"that holds <name>/<run_id>/{SUMMARY}")
    runs = [load_run(p.parent) for p in sorted(root.glob(pattern))]
    if not runs:
        raise ResultsError(f"no {SUMMARY} matching {pattern!r} under {str(root)!r}; run train.py first "
                           "or pass the right --root")
    selected = [r for r in runs if (name is None or r.name == name) and (task is None or r.task == task)]
    if not selected:
        names = sorted({r.name for r in runs})
        tasks = sorted({r.task for r in runs})
        raise ResultsError(f"no runs with name={name!r} task={task!r} under {str(root)!r}; "
                           f"names there: {names}, tasks: {tasks}")
    return selected


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of a run's metrics.jsonl; a missing file gives [], a torn last line (run killed
    mid-write) is dropped rather than failing the whole report."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows
