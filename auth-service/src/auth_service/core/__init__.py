"""Cross-cutting pieces (security, cache, monitoring) of the auth service."""
