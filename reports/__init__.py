"""What a researcher reads after runs: summaries read back (results.py), paper tables (results_table.py) and the
sweep-summary Hydra callback (sweep_summary.py). Process services (checkpoints, DDP, locks, logging) are runtime/."""
