"""Every check the platform runs: contract compilation (YAML → polars/pandera rules), the staging
checks (contract, reconciliation), the serving checks and freshness, as specs and results."""
