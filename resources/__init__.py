"""Per-environment resources: lake storage, catalog, and the environment loader."""
