"""The engine: deterministic loop, run replay and the worker."""
