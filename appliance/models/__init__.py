"""Model wrappers: embedders, the default model catalogue, and (later) the registry and LLM runtimes."""
