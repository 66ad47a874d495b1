"""Ingestion: sources, parsers, chunking and the pipeline that writes documents."""
