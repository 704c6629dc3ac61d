"""Shared test setup: never talk to W&B. The project is imported as an installed package (`make venv` runs
`pip install -e .`; `python -m pytest` from the repo root also finds it)."""
import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
