"""Cross-cutting pieces (security, cache, monitoring) of the memory service."""
