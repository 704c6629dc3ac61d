"""What a search hands back (search.nce.NceSearch.finish): the found network as a model config, and where it may be
exported (configs/model/<export_name>.yaml); the trainer writes it (runtime.run_folder.write_found)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.cli import CONFIG_DIR

FOUND_MARK = "# Found by the NCE search"  # first line of every config this search writes


def export_path(export_name: str | None) -> Path | None:
    """configs/model/<export_name>.yaml; refuses a name that would overwrite a model config the search did not write."""
    if not export_name:
        return None
    if not isinstance(export_name, str) or not export_name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"search.export_name={export_name!r} is invalid: use letters, digits, '_' or '-' (it becomes "
                         f"configs/model/<export_name>.yaml)")
    path = CONFIG_DIR / "model" / f"{export_name}.yaml"
    if path.exists() and not path.read_text().startswith(FOUND_MARK):
        raise ValueError(f"search.export_name={export_name} would overwrite {path}, a model config the NCE search did "
                         f"not write: choose another name")
    return path


@dataclass(frozen=True)
class FoundNetwork:
    """What a search hands back: the summary's entry and the found network's model config, which the trainer writes
    to its run folder and, when `export` is set, to configs/model/<export_name>.yaml (model=<export_name>)."""

    summary: dict
    model_config: dict
    header: list[str]
    export: Path | None

    def text(self, run_dir: Path) -> str:
        comments = "".join(f"# {line}\n" for line in self.header)
        return f"{FOUND_MARK} {run_dir} (docs/methods.md §2):\n{comments}" + yaml.safe_dump(self.model_config,
                                                                                          sort_keys=False)
