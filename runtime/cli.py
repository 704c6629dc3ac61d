"""Command-line checks that run before Hydra starts a job, and the run folder name.

Hydra's own messages for a bad override are multi-line dumps (an unknown choice lists its search path, a misspelled
key prints "Key 'epoch' is not in struct" with the full key and object type), and a plainly mistyped value such as
`seed=abc` passes Hydra entirely and fails later as a traceback. A researcher deserves one line naming the bad value
and what to do, and an exit code != 0, in well under a second:

    model=resnet99        -> model=resnet99 is not a config in configs/model/: choose one of edsr_baseline, ...
    optim.epoch=3         -> optim.epoch is not a config key: did you mean optim.epochs? (...)
    seed=abc              -> seed=abc is invalid: use an integer

Overrides are parsed by Hydra's own OverridesParser, so its sweep syntax (`a,b`, `choice()`, `range()`, `glob()`,
`interval()`), quoting and lists pass exactly as Hydra reads them. Keys are checked against the config composed with
the group choices on the command line (the first value of a sweep). The config folders are the registry: the valid
choices of a group are the YAML files in `configs/<group>/`.
"""
import difflib
import hashlib
from pathlib import Path
from typing import Any, Iterator

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAME = "config"
MAX_RUN_ID = 120  # characters of a run folder name; NAME_MAX is 255 bytes, and a folder name is read by people
# Keys whose value is an integer or null although their default is one of the two (null = full precision / default).
NUMBER_OR_NULL = ("checkpoint_every_min",)
# Settings that do not change what a run computes (where and how fast it runs, what it prints, where files live):
# configs/config.yaml leaves them out of the run folder's name and runtime/resume_guard ignores them when it compares
# configs; tests/runtime/test_run_identity.py keeps the three lists equal. A sweep over one of them is refused.
PATH_KEYS = ("experiment", "name", "run_id", "run_dir", "results_dir", "data_root")  # they place the folder instead
SAME_FOLDER_KEYS = ("device", "compile", "progress", "threads", "log_every", "logger", "logger.wandb.mode",
                    "logger.wandb.project", "logger.wandb.entity", "logger.tensorboard.flush_secs", "data.num_workers",
                    "hydra.launcher.n_jobs", "checkpoint_every_min", "log_transitions")
# Keys added after run folders were written with configs that lack them, and the value those runs used: an absent
# key equals this (the resume check, the table's rerun pooling). Keys whose old behaviour is null need no entry.
ADDED_KEY_DEFAULTS = {"quant.weight_grid": "symmetric", "quant.grad_format": "int", "quant.grad_rounding": "nearest"}
INT_OR_NULL = ("bits", "threads", "quant.bits.w", "quant.bits.a", "quant.bits.g", "data.train_subset",
               "data.train_limit", "data.test_limit")


def config_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    folder = config_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def config_groups(config_dir: Path = CONFIG_DIR) -> list[str]:
    """`model`, `quant`, `quant/grad`, ...: every folder holding YAML files, except Hydra's own `hydra/...`."""
    return sorted(str(p.parent.relative_to(config_dir)) for p in config_dir.glob("**/*.yaml")
                  if p.parent != config_dir and not str(p.parent.relative_to(config_dir)).startswith("hydra"))


def _command_line_overrides(argv: list[str]) -> list[str] | None:
    """The overrides in argv as Hydra's own argument parser sees them; None when Hydra should answer alone."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def refuse(message: str):
        raise ValueError(message)

    parser.error = refuse  # an unknown flag: let Hydra print its usage, not us
    try:
        args = parser.parse_args(argv)
    except ValueError:
        return None
    if args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun \
            or args.config_path or args.config_name or args.config_dir:
        return None  # another config than ours, or no job at all
    return args.overrides


def _values(override) -> Iterator[tuple[Any, str]]:
    """(value, as typed) for each value an override takes: one, or each element of a sweep."""
    from hydra.core.override_parser.types import ValueType

    if override.value_type == ValueType.ELEMENT:
        yield override.value(), override.get_value_element_as_str()
    elif override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP, ValueType.RANGE_SWEEP):
        yield from zip(override.sweep_iterator(), override.sweep_string_iterator())
    # interval() sweeps are ranges of floats for optimizers; glob() is handled with the group choices


def _group_choices(override, group: str) -> tuple[list[str], str | None]:
    """The config names a group override selects, or an error naming the bad one and the valid list."""
    from hydra.core.override_parser.types import ValueType

    choices = config_choices(group)
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        selected = override.value().filter(choices)
        if not selected:
            return [], (f"{group}={override.get_value_string()} matches no config in configs/{group}/: "
                        f"choose from {', '.join(choices)}")
        return selected, None
    selected = ["null" if v is None else f"[{','.join(map(str, v))}]" if isinstance(v, list) else str(v)
                for v, _ in _values(override)]
    for value, typed in _values(override):  # a list selects several configs at once (logger=[wandb,tensorboard])
        for choice in value if isinstance(value, list) else [value]:
            if choice is not None and choice not in choices:
                where = f"{group}={typed}: {choice}" if isinstance(value, list) else f"{group}={choice}"
                return [], f"{where} is not a config in configs/{group}/: choose one of {', '.join(choices)}"
    return selected, None


def flatten(node: Any, prefix: str = "", *, branches: bool = False) -> dict[str, Any]:
    """{"optim.epochs": 3, "quant.keep_fp": [...], ...} of a plain config dict: lists are leaves, and so are empty
    dicts. `branches=True` also lists every dict itself under its own key ("optim": {...}), so that the result says
    which keys exist at all (the override checks); without, it is the leaves to compare (the resume check)."""
    if not isinstance(node, dict) or (prefix and not node and not branches):
        return {prefix: node}
    flat = {prefix: node} if prefix and branches else {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key), branches=branches))
    return flat


def _compose_defaults(group_overrides: list[str]) -> dict[str, Any] | None:
    """The config with the command line's group choices, unresolved; None if Hydra cannot compose it (it says why)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=group_overrides)
    except Exception:  # noqa: BLE001 - a broken experiment file or `+group` misuse: Hydra's own message is better
        return None
    return flatten(OmegaConf.to_container(cfg, resolve=False), branches=True)


def _type_error(key: str, default: Any, value: Any, typed: str) -> str | None:
    """One line if `value` cannot stand where the composed default is an int, float or bool."""
    if any(isinstance(v, str) and "${" in v for v in (default, value)):
        return None  # an interpolation: its type is that of another key
    if key in NUMBER_OR_NULL:
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        want = "a number, or null to switch it off"
    elif key in INT_OR_NULL:
        ok, want = value is None or (isinstance(value, int) and not isinstance(value, bool)), "an integer or null"
    elif isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return None
    return None if ok else f"{key}={typed} is invalid: use {want}"


def _unknown_key(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if "/" in key:
        return f"{key} is not a config group: {f'did you mean {close[0]}?' if close else 'see the folders in configs/'}"
    hint = f"did you mean {close[0]}?" if close else "python train.py --cfg job lists the keys"
    return f"{key} is not a config {'key' if '.' in key else 'key or group'}: {hint} (+{key}=... adds a new key)"


def _repeated(parsed) -> str | None:
    """`data=synthetic ... data=fashion_mnist`: Hydra silently keeps the last; a typo in a long command goes unseen."""
    seen = {}
    for override in parsed:
        name = override.key_or_group
        if name in seen:
            return (f"{name} is given twice ({seen[name]} and {override.input_line}): keep one; a sweep over several "
                    f"values is one override, {name}=a,b with -m")
        seen[name] = override.input_line
    return None


def _sweep_sharing_a_folder(parsed, argv: list[str]) -> str | None:
    """A multirun over a key that does not name the run folder would send every value into one folder: the first
    job trains, the others resume it or skip it as finished. Refuse it (the folder name is the run's identity)."""
    if not ({"-m", "--multirun"} & set(argv)):
        return None
    for override in parsed:
        name = override.key_or_group
        if name in SAME_FOLDER_KEYS and len(list(_values(override))) > 1:
            return (f"{override.input_line} sweeps a setting that does not name the run folder (it does not change "
                    f"results), so its jobs would share one folder: run one command per value, each with its own "
                    f"name=...")
    return None


def _bits_conflict(key_overrides, group_overrides: list[str], defaults: dict[str, Any]) -> str | None:
    """`bits=N` sets W, A and G at once; beside `quant.bits.w=...`, `quant=fp32` or `quant=apt` one of the two
    settings would be silently dropped, so the command is refused and both are named."""
    def widths(override) -> set:
        return {32 if value is None else value for value, _ in _values(override)}

    bits = next((o for o in key_overrides if o.key_or_group == "bits"), None)
    if bits is None or widths(bits) == {32}:
        return None
    for per_role in (o for o in key_overrides if o.key_or_group.startswith("quant.bits.")):
        if widths(per_role) != widths(bits):
            return (f"{bits.input_line} conflicts with {per_role.input_line}: bits= sets W, A and G at once; use "
                    f"quant.bits.w/a/g alone for different widths")
    quant = next((g for g in group_overrides if g.startswith("quant=")), None)
    if quant is not None and all(defaults.get(f"quant.bits.{role}") in (None, 32) for role in "wag"):
        return f"{bits.input_line} conflicts with {quant} (full precision): drop one of them"
    if quant is not None and defaults.get("quant.precision") is not None:
        return (f"{bits.input_line} conflicts with {quant}: APT starts every role at quant.bits.w/a/g (one of "
                f"quant.precision.candidates); set those instead")
    return None


def check_overrides(argv: list[str]) -> str | None:
    """A one-line error for the first bad override in `sys.argv[1:]`, else None (then Hydra runs as usual).

    Checks, in order: Hydra's syntax; group choices (sweeps expanded, `glob()` included); misspelled groups and keys
    (the nearest valid name is suggested); values of int/float/bool keys. `+key=...` may add keys; `hydra.*` and
    `hydra/...` belong to Hydra and its plugins and are left to it.
    """
    overrides = _command_line_overrides(argv)
    if not overrides:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    for text in overrides:  # one at a time, to name the one that does not parse
        try:
            parsed += parser.parse_overrides([text])
        except HydraException as err:  # ANTLR's "no viable alternative at input '[1,'" and a multi-line dump
            why = (str(err).strip().splitlines() or ["cannot parse it"])[0]
            return (f"{text} is not a valid override ({why}): check its quotes and brackets, see "
                    f"https://hydra.cc/docs/advanced/override_grammar/basic/")

    error = _repeated(parsed) or _sweep_sharing_a_folder(parsed, argv)
    if error:
        return error
    groups = config_groups()
    group_overrides, key_overrides = [], []
    for override in parsed:
        name = override.key_or_group
        if name == "hydra" or name.startswith(("hydra.", "hydra/")):
            continue
        if name in groups:
            if override.type == OverrideType.DEL:
                group_overrides.append(override.input_line)
                continue
            selected, error = _group_choices(override, name)
            if error:
                return error
            group_overrides.append(f"{override.get_key_element()}={selected[0]}")
        elif "/" in name:
            return _unknown_key(name, groups)
        else:
            key_overrides.append(override)
    if not key_overrides:
        return None

    defaults = _compose_defaults(group_overrides)
    if defaults is None:
        return None
    error = _bits_conflict(key_overrides, group_overrides, defaults)
    if error:
        return error
    for override in key_overrides:
        key = override.key_or_group
        if override.type in (OverrideType.ADD, OverrideType.FORCE_ADD) and key not in defaults:
            continue  # a new key, on purpose
        if key not in defaults:
            if any(isinstance(defaults.get(key[:i]), list) for i, c in enumerate(key) if c == "."):
                continue  # an element of a list (`quant.keep_fp.0=...`): Hydra checks the index
            return _unknown_key(key, [*defaults, *groups])
        if override.type == OverrideType.DEL:
            continue
        for value, typed in _values(override):
            error = _type_error(key, defaults[key], value, typed)
            if error:
                return error
    return None


check_group_overrides = check_overrides  # the name train.py used before keys and values were checked too


def run_id(override_dirname: str, world: int = 1) -> str:
    """Folder name of a run, derived from its overrides so sweep jobs never overwrite each other.

    `quant/grad=lbt,bits=4` -> `quant.grad=lbt,bits=4`; no overrides -> `default`. A run of `world` > 1 processes
    (torchrun, a multi-task SLURM job) ends in `,world=N`: its global batch and rounding noise differ from a
    1-process run of the same command, so the two must never resume or skip as each other. Past MAX_RUN_ID
    characters (a long override list would otherwise end in "File name too long" at 255 bytes), the name keeps the
    whole overrides that fit and ends in 8 hex digits of the SHA-1 of the full string: `bits=4,...-3f9a2c1b`.
    """
    name = override_dirname.replace("/", ".")
    if world > 1:
        name = f"{name},world={world}" if name else f"world={world}"
    name = name or "default"
    if len(name.encode()) <= MAX_RUN_ID:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[:MAX_RUN_ID - len(",...-") - len(digest)].decode(errors="ignore")
    if "," in head:
        head = head[:head.rindex(",") + 1]  # whole overrides only, so the prefix never shows a cut value
    return f"{head}...-{digest}"
