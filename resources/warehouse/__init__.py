"""The warehouse dbt builds: the interface (``base``) and its backends (``duckdb``; Redshift in AWS)."""
