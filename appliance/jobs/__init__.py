"""Background jobs: Huey signals that work exists; state, leases and progress live in DuckDB."""
