"""The platform's vocabulary, free of Dagster and of any backend: declarations (insight zones),
identifiers and system columns, contract types, errors, and the file-arrival planner."""
