"""The run folder's checks and last words: refuse another config's or another world size's folder, skip a finished
run, record a failed one, and leave no empty folder behind a rejected command."""
import logging
from pathlib import Path

from omegaconf import DictConfig

from runtime import atomic, distributed, resume_guard
from reports.results import read_summary

log = logging.getLogger("train")


class RunFolderRefused(RuntimeError):
    """The run folder belongs to another process or to another config: refuse in one line, write nothing there."""


def check_run_folder(run_dir: Path, config: dict) -> dict | None:
    """The folder's finished summary when this run is already done (then it is skipped), else None; refuses a
    folder that holds another config's or another world size's run, before anything is written there."""
    refusal = resume_guard.check_resume_config(run_dir, config)
    if refusal:  # never resume (or skip as done) a run folder that holds another config's state
        raise RunFolderRefused(refusal)
    previous = read_summary(run_dir)
    world = distributed.launched_world_size()
    if previous and previous.get("world_size", 1) != world:  # another global batch: never skip or resume as it
        raise RunFolderRefused(f"{run_dir} holds a run of {previous.get('world_size', 1)} process(es), this one has "
                               f"{world}: choose another name=... for it")
    return previous if previous and previous.get("status") == "finished" else None


def remove_empty_run_dir(cfg: DictConfig) -> None:
    """Hydra makes the run folder before the job starts; a rejected command must not leave it (nor its empty
    results/<name>/ parent) behind. Only empty folders are removed, up to results_dir."""
    results, folder = Path(cfg.results_dir).resolve(), Path(cfg.run_dir).resolve()
    while folder != results and results in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (another run's files, train.log) or already gone
            return
        folder = folder.parent


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """A failed job leaves a summary saying why, so a sweep's table lists it instead of silently missing it."""
    run_dir = Path(cfg.run_dir)
    previous = read_summary(run_dir) or {}
    try:
        atomic.write_json(run_dir / "summary.json", {**previous, "status": "failed", "name": cfg.name,
                                                     "run_id": run_dir.name, "error": f"{type(error).__name__}: {error}"})
    except OSError as e:  # a full disk or a read-only folder: say so, and keep the original error
        log.error(f"could not record the failure in {run_dir}: {e}")


def write_found(run_dir: Path, found) -> dict:
    """A search's found network (search.nce.FoundNetwork, or None): its model config written atomically to
    `<run_dir>/found_model.yaml` and, when exported, to configs/model/; returns its summary entry."""
    if found is None:
        return {}
    text = found.text(run_dir)
    atomic.write_text(run_dir / "found_model.yaml", text)
    if found.export:
        atomic.write_text(found.export, text)
    return found.summary
