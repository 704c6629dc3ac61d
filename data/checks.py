"""One-line checks of the numbers a data config passes to a builder, run before any file is read.

Each message names the key exactly as the user types it on the command line (`data.batch_size=0`), says what is
wrong and what to use instead (STYLE.md rule 10).
"""
from __future__ import annotations


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a user


def check_int(key: str, value, *, minimum: int = 1) -> int:
    """`value` if it is an integer >= `minimum`; else ValueError "data.<key>=<value> is invalid: ..."."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"data.{key}={value!r} is invalid: use an integer >= {minimum}")
    return value


def check_optional_int(key: str, value, *, maximum: int | None = None) -> int | None:
    """None, or an integer in 1..`maximum` (no upper bound when `maximum` is None)."""
    if value is None:
        return None
    if not _is_int(value) or value < 1 or (maximum is not None and value > maximum):
        allowed = "an integer >= 1" if maximum is None else f"an integer in 1..{maximum}"
        raise ValueError(f"data.{key}={value!r} is invalid: use null (all) or {allowed}")
    return value


def check_ints(*, minimum: int = 1, **values) -> None:
    """`check_int` on each keyword: `check_ints(batch_size=b, eval_batch_size=e)`."""
    for key, value in values.items():
        check_int(key, value, minimum=minimum)
