"""Observability: structured logs, Prometheus metrics and the audit log."""
