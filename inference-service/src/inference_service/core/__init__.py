"""Cross-cutting pieces (security, cache, monitoring) of the inference service."""
