"""Derived search indexes (BM25, vectors) fed from the DuckDB outbox."""
