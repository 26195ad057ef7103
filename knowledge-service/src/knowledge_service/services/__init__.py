"""Logic and upstream clients of the knowledge service."""
