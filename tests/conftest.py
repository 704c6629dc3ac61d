"""Shared test setup: never talk to W&B. The project is imported as an installed package (`make venv` runs
`pip install -e .`; `python -m pytest` from the repo root also finds it)."""
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

pytest_plugins = ["tests.fake_runs"]  # fake run folders for the tests of reports/ and scripts/


@pytest.fixture
def fresh_dynamo():
    """Compiled-frame caches are per code object (e.g. nn.Sequential.forward), shared by every test in the
    process: start and leave them empty, so these graphs count alone and do not use up other tests' recompiles."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
