"""The catalog: the interface (``base``) and its backends (``duckdb``; Glue in AWS)."""
