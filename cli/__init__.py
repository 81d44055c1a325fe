"""Command-line tools: ``python -m cli --help``."""
