"""Cross-cutting pieces (security, cache, monitoring) of the knowledge service."""
