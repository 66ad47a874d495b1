"""DuckDB metadata: the connection, ordered migrations and repositories."""
