"""Logic and upstream clients of the memory service."""
