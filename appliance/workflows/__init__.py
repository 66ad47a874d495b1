"""Governed workflows: Workflow, Agent, Tool and Policy documents, their checks, and the durable engine."""
