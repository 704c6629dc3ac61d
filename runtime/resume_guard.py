"""Refuse to resume a run folder with a config that would change its results.

A run folder is named by the command-line overrides, so an edited YAML file, a changed default or an override Hydra
leaves out of the folder name (`experiment=`, `amp=`) can send a different config into a folder that holds a
checkpoint: the run would silently continue someone else's training. The trainer stores the resolved config in
`<run_dir>/config.yaml`; before resuming, the new resolved config must match it on every key that can change results.
"""
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runtime.cli import ADDED_KEY_DEFAULTS, SAME_FOLDER_KEYS, flatten

CONFIG_NAME = "config.yaml"
# Keys (and whole subtrees) that do not change what a run computes: the settings that do not name the run folder
# (runtime.cli.SAME_FOLDER_KEYS), where files live, and all of W&B's labels. `amp`, `deterministic` and
# `channels_last` change numerics, so they count (and name the folder).
IGNORED = (*SAME_FOLDER_KEYS, "logger", "results_dir", "data_root", "run_dir", "run_id", "hydra",
           # ${data_root}/...: moving the datasets changes no result
           "data.root", "data.default_root", "data.benchmark_root")
MAX_SHOWN = 5

log = logging.getLogger(__name__)


def _ignored(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in IGNORED)


def changed_keys(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted paths whose values differ (or exist on one side only), sorted, leaving out IGNORED keys."""
    old, new = flatten(stored), flatten(current)
    # A key that one side lacks and the other holds as null is equal: a setting added later whose default (null)
    # is "off" (model.init_from) must not refuse the folders written before it existed; nor one that held another
    # value before it could be set (runtime.cli.ADDED_KEY_DEFAULTS).
    return sorted(k for k in old.keys() | new.keys() if not _ignored(k)
                  and old.get(k, ADDED_KEY_DEFAULTS.get(k)) != new.get(k, ADDED_KEY_DEFAULTS.get(k)))


def _short(value: Any) -> str:
    """A value as it is typed on the command line (true, null), cut to fit one line."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def read_stored_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a run folder was started with, or None when there is none or it cannot be read."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.exists():
        return None
    try:  # read back with the loader that wrote it (OmegaConf.to_yaml), so 1e-05 stays a float; never resolved
        stored = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # noqa: BLE001 - truncated, not YAML, not a mapping: treat as absent
        log.warning(f"cannot read {path} ({type(err).__name__}); not checking that the run's config is unchanged")
        return None
    return stored if isinstance(stored, dict) else None


def check_resume_config(run_dir: Path, config: dict[str, Any]) -> str | None:
    """A one-line error when `run_dir` was started with a config that differs from `config`, else None.

    `config` is the new resolved config (`OmegaConf.to_container(cfg, resolve=True)`). Call it before anything
    is written into `run_dir`, in particular before `config.yaml` is overwritten.
    """
    stored = read_stored_config(run_dir)
    if stored is None:
        return None
    keys = changed_keys(stored, config)
    if not keys:
        return None
    old, new = flatten(stored), flatten(config)
    shown = [f"{k}={_short(new[k])} (was {_short(old[k])})" if k in old and k in new
             else f"{k} {'added' if k in new else 'removed'}" for k in keys[:MAX_SHOWN]]
    more = f" and {len(keys) - MAX_SHOWN} more" if len(keys) > MAX_SHOWN else ""
    return (f"{run_dir} was started with a different config: {', '.join(shown)}{more}; rerun its original command to "
            f"resume it, or delete {run_dir} or choose another name=... to start over")
