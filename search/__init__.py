"""Architecture searches that run inside the one trainer (`search=<name>`): search/nce.py, docs/methods.md §2."""
