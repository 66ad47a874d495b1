"""Retrieval: hybrid search, fusion, rerank, filters."""
