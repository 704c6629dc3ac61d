"""Command-line checks that run before Hydra composes anything.

Hydra's own message for an unknown config choice is a multi-line dump of its search path. A researcher who typed
`model=resnet99` deserves one line naming the bad value and the valid choices, and an exit code != 0, in well under
a second. The config folders are the registry: the valid choices are the YAML files in `configs/<group>/`.
"""
import re
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_GROUP_OVERRIDE = re.compile(r"^(?:\+\+|\+|~)?(?P<group>[a-z_]+(?:/[a-z_]+)*)=(?P<value>.*)$")


def config_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    folder = config_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_group_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> str | None:
    """Return a one-line error for the first `group=choice` naming no file in configs/<group>/, else None.

    Handles multirun lists (`quant/grad=minmax,lbt`); leaves `hydra/...` groups to Hydra (its plugins add choices).
    """
    for arg in argv:
        match = _GROUP_OVERRIDE.match(arg)
        if not match or match["group"].startswith("hydra"):
            continue
        group, value = match["group"], match["value"]
        choices = config_choices(group, config_dir)
        if not choices:  # a plain key such as `seed=1`, or a dotted key: not a config group
            continue
        for choice in value.split(","):
            if choice not in choices and choice not in ("null", ""):
                return f"{group}={choice} is not a config in configs/{group}/: choose one of {', '.join(choices)}"
    return None


def run_id(override_dirname: str) -> str:
    """Folder name of a run, derived from its overrides so sweep jobs never overwrite each other.

    `quant/grad=lbt,bits=4` -> `quant.grad=lbt,bits=4`; no overrides -> `default`.
    """
    return override_dirname.replace("/", ".") or "default"
