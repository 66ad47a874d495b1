"""Answer generation: prompts, context building, citations and streaming."""
