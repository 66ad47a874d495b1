"""Observability: structured logs (metrics and the audit log come with later issues)."""
