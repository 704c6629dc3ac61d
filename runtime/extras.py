"""The optional parts of the project (pyproject.toml's extras) and the one-line error when one is missing.

A module behind an extra imports its package as usual, inside `try`, and raises MissingExtra from the
ModuleNotFoundError; assemble.build turns it into a one-line refusal before any data is read, e.g.
`error: task=detection needs torchmetrics, which is not installed: pip install -e '/path/to/lowbit[detection]'`.
"""
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]  # editable installs only: configs/ is read from here


class MissingExtra(ModuleNotFoundError):
    """`what` (a config choice or a script) needs `module`, which `pip install lowbit[extra]` adds."""

    def __init__(self, what: str, module: str | None, extra: str):
        module = (module or "a package").split(".")[0]  # the package, not the submodule the import asked for
        super().__init__(f"{what} needs {module}, which is not installed: pip install -e '{CHECKOUT}[{extra}]'",
                         name=module)
