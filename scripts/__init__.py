"""Command-line tools that read run folders (tables, figures); importable as `scripts.<tool>` for tests."""
